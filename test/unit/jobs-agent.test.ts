// The agent's job, Grep and Glob RPCs, served in process over a Unix socket.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ContainerService, JobState, JobStream, WaitOutcome } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";

let t: TestAgent;
let jobDir: string;

before(async () => {
  jobDir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-jobs-"));
  // A stale job dir of an earlier agent is cleared when jobs are first used.
  await fs.mkdir(path.join(jobDir, "job-000000000000"));
  t = await startTestAgent({ jobs: { dir: jobDir, ringBytes: 4096, maxRuntimeMs: 5000 } });
});

after(async () => {
  await t?.close();
  await fs.rm(jobDir, { recursive: true, force: true });
});

const M = ContainerService.method;
const start = (command: string, extra: Record<string, unknown> = {}) => t.client.unary(M.startJob, { exec: { command, ...extra } });
const wait = (id: string, timeoutMs: number, idleTimeoutMs = 0) => t.client.unary(M.waitJob, { id, timeoutMs, idleTimeoutMs });
const read = (id: string, stream: JobStream, offset = 0n, tailBytes = 0) => t.client.unary(M.readJobOutput, { id, stream, offset, tailBytes });
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function rejectsWith(p: Promise<unknown>, code: number, re: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.equal(rpcCode(e), code, String(e));
    assert.match((e as Error).message, re);
    return true;
  });
}

test("a job runs detached: its output is read by offset, WaitJob reports its end", async () => {
  const { job } = await start("echo out; echo err >&2; exit 3");
  assert.match(job!.id, /^job-[0-9a-f]{12}$/);
  assert.equal(job!.state, JobState.RUNNING);
  await assert.rejects(fs.stat(path.join(jobDir, "job-000000000000")), "the stale dir was removed");
  const w = await wait(job!.id, 5000);
  assert.equal(w.outcome, WaitOutcome.ENDED);
  assert.equal(w.job!.state, JobState.EXITED);
  assert.equal(w.job!.exitCode, 3);
  assert.equal(w.job!.stdoutBytes, 4n);
  const out = await read(job!.id, JobStream.STDOUT);
  assert.equal(Buffer.from(out.data).toString(), "out\n");
  assert.equal(out.eof, true);
  assert.equal(Buffer.from((await read(job!.id, JobStream.STDERR, 2n)).data).toString(), "r\n");
  const listed = (await t.client.unary(M.listJobs, {})).jobs.map((j) => j.id);
  assert.ok(listed.includes(job!.id));
  assert.equal((await t.client.unary(M.getJob, { id: job!.id })).job!.exitCode, 3);
  assert.ok((await fs.stat(path.join(jobDir, job!.id, "stdout"))).isFile(), "output is in the job dir");
});

test("the ring keeps the last bytes: an early offset is moved forward and says how much was dropped", async () => {
  const { job } = await start("i=0; while [ $i -lt 1000 ]; do echo line$i; i=$((i+1)); done");
  await wait(job!.id, 5000);
  const r = await read(job!.id, JobStream.STDOUT);
  assert.ok(r.dropped > 0n);
  assert.equal(r.offset, r.dropped);
  assert.equal(r.data.byteLength, 4096);
  assert.ok(Buffer.from((await read(job!.id, JobStream.STDOUT, 0n, 10)).data).toString().endsWith("line999\n"));
});

test("WaitJob returns on idle output and on its timeout; the job keeps running", async () => {
  const { job } = await start("echo started; sleep 30");
  const idle = await wait(job!.id, 5000, 300);
  assert.equal(idle.outcome, WaitOutcome.IDLE);
  const timedOut = await wait(job!.id, 200);
  assert.equal(timedOut.outcome, WaitOutcome.TIMEOUT);
  assert.equal(timedOut.job!.state, JobState.RUNNING);
  const killed = await t.client.unary(M.signalJob, { id: job!.id, signal: "TERM" });
  assert.equal(killed.job!.state, JobState.KILLED);
  assert.equal(killed.job!.signal, "SIGTERM");
  assert.equal(killed.job!.killedByRequest, true);
});

test("SignalJob kills the whole process group, a child the job forked included", async () => {
  const pidFile = path.join(t.dataDir, "child.pid");
  const { job } = await start(`sleep 60 & echo $! > ${pidFile}; wait`);
  let child = 0;
  for (let i = 0; i < 200 && !child; i++) {
    child = Number(await fs.readFile(pidFile, "utf8").catch(() => "0")) || 0;
    if (!child) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(child > 0 && alive(child));
  const res = await t.client.unary(M.signalJob, { id: job!.id });
  assert.equal(res.job!.state, JobState.KILLED);
  assert.equal(res.job!.signal, "SIGKILL");
  for (let i = 0; i < 100 && alive(child); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(alive(child), false, "the forked child is gone");
});

test("a job running past its limit is killed and says so", async () => {
  const { job } = await start("sleep 30", { timeoutMs: 300 });
  const w = await wait(job!.id, 5000);
  assert.equal(w.outcome, WaitOutcome.ENDED);
  assert.equal(w.job!.state, JobState.KILLED);
  assert.equal(w.job!.timedOut, true);
  assert.equal(w.job!.killedByRequest, false);
});

test("job requests are validated field by field", async () => {
  await rejectsWith(t.client.unary(M.startJob, {}), Status.INVALID_ARGUMENT, /exec is missing/);
  await rejectsWith(start("true", { pty: true }), Status.INVALID_ARGUMENT, /exec\.pty is not supported/);
  await rejectsWith(start("true", { stdin: new Uint8Array([1]) }), Status.INVALID_ARGUMENT, /exec\.stdin is not supported/);
  await rejectsWith(start("true", { timeoutMs: 6000 }), Status.INVALID_ARGUMENT, /over the agent's job runtime limit of 5000 ms/);
  await rejectsWith(t.client.unary(M.startJob, { exec: { argv: ["/no/such/program"] } }), Status.NOT_FOUND, /no\/such\/program/);
  await rejectsWith(start("true", { user: "nosuchuser" }), Status.INVALID_ARGUMENT, /nosuchuser/);
  await rejectsWith(t.client.unary(M.getJob, { id: "" }), Status.INVALID_ARGUMENT, /id is empty/);
  await rejectsWith(t.client.unary(M.getJob, { id: "../etc" }), Status.INVALID_ARGUMENT, /is not a job id/);
  await rejectsWith(t.client.unary(M.getJob, { id: "job-0123456789ab" }), Status.NOT_FOUND, /no job job-0123456789ab/);
  const { job } = await start("echo x");
  await wait(job!.id, 5000);
  await rejectsWith(read(job!.id, JobStream.UNSPECIFIED), Status.INVALID_ARGUMENT, /stream must be/);
  await rejectsWith(read(job!.id, JobStream.STDOUT, 99n), Status.INVALID_ARGUMENT, /offset 99 is past the end of stdout \(2 bytes/);
  await rejectsWith(read(job!.id, JobStream.STDOUT, 1n, 5), Status.INVALID_ARGUMENT, /not both/);
  await rejectsWith(t.client.unary(M.readJobOutput, { id: job!.id, stream: JobStream.STDOUT, maxBytes: 5 * 1024 * 1024 }), Status.INVALID_ARGUMENT, /max_bytes .* over the limit/);
  await rejectsWith(wait(job!.id, 0), Status.INVALID_ARGUMENT, /timeout_ms is 0/);
  await rejectsWith(wait(job!.id, 3_600_001), Status.INVALID_ARGUMENT, /over the limit/);
  await rejectsWith(t.client.unary(M.signalJob, { id: job!.id, signal: "SIGNOPE" }), Status.INVALID_ARGUMENT, /unknown signal "SIGNOPE"/);
});

test("Grep finds lines, skips .git and binary files, honours glob, ignore_case and max_results", async () => {
  const d = path.join(t.dataDir, "src");
  await fs.mkdir(path.join(d, "sub"), { recursive: true });
  await fs.mkdir(path.join(d, ".git"), { recursive: true });
  await fs.writeFile(path.join(d, "a.ts"), "const Needle = 1;\nno\nneedle again\r\n");
  await fs.writeFile(path.join(d, "sub", "b.js"), "a needle\n");
  await fs.writeFile(path.join(d, ".git", "c.ts"), "needle in git\n");
  await fs.writeFile(path.join(d, "bin.dat"), Buffer.from("needle\0binary"));
  const all = await t.client.unary(M.grep, { pattern: "needle", path: "src", ignoreCase: true });
  assert.deepEqual(all.matches.map((m) => [path.relative(d, m.path), m.lineNumber, m.line]), [
    ["a.ts", 1, "const Needle = 1;"],
    ["a.ts", 3, "needle again"],
    ["sub/b.js", 1, "a needle"],
  ]);
  assert.equal(all.binaryFilesSkipped, 1);
  assert.equal(all.stopped, "");
  const ts = await t.client.unary(M.grep, { pattern: "needle", path: "src", glob: "*.ts" });
  assert.deepEqual(ts.matches.map((m) => m.lineNumber), [3]);
  const capped = await t.client.unary(M.grep, { pattern: "needle", path: "src", ignoreCase: true, maxResults: 2 });
  assert.equal(capped.matches.length, 2);
  assert.equal(capped.stopped, "max_results");
  const oneFile = await t.client.unary(M.grep, { pattern: "^a ", path: "src/sub/b.js" });
  assert.equal(oneFile.matches.length, 1);
  await rejectsWith(t.client.unary(M.grep, { pattern: "(unclosed", path: "src" }), Status.INVALID_ARGUMENT, /pattern is not a valid regular expression/);
  await rejectsWith(t.client.unary(M.grep, { pattern: "x", path: "nope" }), Status.NOT_FOUND, /nope/);
  await rejectsWith(t.client.unary(M.grep, { pattern: "x", maxResults: 5001 }), Status.INVALID_ARGUMENT, /max_results 5001/);
});

test("Grep stops a regular expression that backtracks past the deadline", async () => {
  await fs.writeFile(path.join(t.dataDir, "redos.txt"), `${"a".repeat(40)}b\n`);
  const t0 = Date.now();
  const r = await t.client.unary(M.grep, { pattern: "^(a+)+$", path: "redos.txt", timeoutMs: 300 });
  assert.equal(r.stopped, "deadline");
  assert.ok(Date.now() - t0 < 5000);
});

test("Glob matches paths below a directory, sorted, .git skipped", async () => {
  const r = await t.client.unary(M.glob, { pattern: "**/*.{ts,js}", path: "src" });
  assert.deepEqual(r.paths, ["a.ts", "sub/b.js"]);
  assert.deepEqual((await t.client.unary(M.glob, { pattern: "*", path: "src" })).paths, ["a.ts", "bin.dat", "sub/"]);
  await rejectsWith(t.client.unary(M.glob, { pattern: "a{b", path: "src" }), Status.INVALID_ARGUMENT, /without its/);
  await rejectsWith(t.client.unary(M.glob, { pattern: "*", path: "src/a.ts" }), Status.INVALID_ARGUMENT, /not a directory/);
});

test("SignalJob on an ended job still reaches what it left running in its process group", async () => {
  const pidFile = path.join(t.dataDir, "left.pid");
  const { job } = await start(`sleep 60 & echo $! > ${pidFile}`);
  const w = await wait(job!.id, 5000);
  assert.equal(w.outcome, WaitOutcome.ENDED);
  assert.equal(w.job!.state, JobState.EXITED);
  const child = Number(await fs.readFile(pidFile, "utf8"));
  assert.ok(alive(child), "the leader exited, its child runs on");
  const res = await t.client.unary(M.signalJob, { id: job!.id });
  assert.equal(res.job!.state, JobState.EXITED, "an ended job keeps its state");
  for (let i = 0; i < 100 && alive(child); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(alive(child), false, "the left-over child is gone");
});

test("ended jobs are forgotten after the retention time; running jobs are capped", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-jobs-limits-"));
  const u = await startTestAgent({ jobs: { dir, retentionMs: 300, maxRunning: 1 } });
  try {
    const first = (await u.client.unary(M.startJob, { exec: { command: "sleep 30" } })).job!;
    await rejectsWith(u.client.unary(M.startJob, { exec: { command: "true" } }), Status.RESOURCE_EXHAUSTED, /1 jobs are running already/);
    await u.client.unary(M.signalJob, { id: first.id });
    const second = (await u.client.unary(M.startJob, { exec: { command: "true" } })).job!;
    await u.client.unary(M.waitJob, { id: second.id, timeoutMs: 5000 });
    assert.ok((await fs.stat(path.join(dir, second.id))).isDirectory());
    // Pruning runs on every StartJob and ListJobs; wait until the retention has passed.
    let listed = (await u.client.unary(M.listJobs, {})).jobs.map((j) => j.id);
    assert.ok(listed.includes(second.id));
    const endedAt = Date.now();
    while (Date.now() - endedAt < 400) await new Promise((r) => setTimeout(r, 50));
    listed = (await u.client.unary(M.listJobs, {})).jobs.map((j) => j.id);
    assert.deepEqual(listed, []);
    await rejectsWith(u.client.unary(M.getJob, { id: second.id }), Status.NOT_FOUND, /ended more than 0 s ago and was forgotten/);
    for (let i = 0; i < 50; i++) {
      if (!(await fs.stat(path.join(dir, second.id)).catch(() => undefined))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await assert.rejects(fs.stat(path.join(dir, second.id)), "its output dir is removed");
  } finally {
    await u.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("BRIDGE_JOB_* settings: defaults, values, and bad values reported with the default used", async () => {
  const { jobsConfigFromEnv, DEFAULT_JOBS_CONFIG } = await import("../../agent/jobs/config.js");
  assert.deepEqual(jobsConfigFromEnv({}), { config: DEFAULT_JOBS_CONFIG, problems: [] });
  assert.equal(DEFAULT_JOBS_CONFIG.maxRuntimeMs, 30 * 60_000);
  const set = jobsConfigFromEnv({ BRIDGE_JOB_DIR: "/run/jobs", BRIDGE_JOB_MAX_RUNTIME_MS: "60000", BRIDGE_JOB_RETENTION_MS: "1000", BRIDGE_JOB_RING_BYTES: "65536" });
  assert.deepEqual([set.config.dir, set.config.maxRuntimeMs, set.config.retentionMs, set.config.ringBytes], ["/run/jobs", 60000, 1000, 65536]);
  const bad = jobsConfigFromEnv({ BRIDGE_JOB_DIR: "relative", BRIDGE_JOB_MAX_RUNTIME_MS: "-1", BRIDGE_JOB_RING_BYTES: "1.5" });
  assert.deepEqual(bad.config, DEFAULT_JOBS_CONFIG);
  assert.equal(bad.problems.length, 3);
  assert.match(bad.problems.join("\n"), /BRIDGE_JOB_DIR="relative" is not an absolute path; using \/var\/lib\/memoh\/jobs/);
  assert.match(bad.problems.join("\n"), /BRIDGE_JOB_MAX_RUNTIME_MS="-1" is not an integer from 1 to/);
});

test("a walk does not enter /proc, /sys or /dev; a file there can still be searched by name", async () => {
  const top = await t.client.unary(M.glob, { pattern: "{proc,sys,dev}/**", path: "/", timeoutMs: 5000 });
  assert.deepEqual(top.paths, []);
  const status = await t.client.unary(M.grep, { pattern: "^Pid:", path: "/proc/self/status" });
  assert.equal(status.matches.length, 1);
});
