import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Status, rpcCode, type StatusCode } from "../../proto/rpc.js";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { TestAgent } from "./helpers/agent.js";
import { ExecSession, processGone, runExec, waitGone } from "./helpers/exec.js";

// The agent reads MEMOH_RUNTIME_ROOT when its modules load: point it at a fake
// runtime whose toolkit holds a probe program and whose bundled node-pty is
// broken (its native part "failed to load"), then load the agent.
const runtimeRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-runtime-test-"));
const toolkitBin = path.join(runtimeRoot, "toolkit", "bin");
await fs.mkdir(toolkitBin, { recursive: true });
await fs.writeFile(path.join(toolkitBin, "memoh-probe"), "#!/bin/sh\necho toolkit-probe\n", { mode: 0o755 });
const brokenPty = path.join(runtimeRoot, "node_modules", "node-pty");
await fs.mkdir(brokenPty, { recursive: true });
await fs.writeFile(path.join(brokenPty, "package.json"), JSON.stringify({ name: "node-pty", main: "index.js" }));
await fs.writeFile(path.join(brokenPty, "index.js"), 'throw new Error("pty.node: cannot open shared object file");\n');
process.env.MEMOH_RUNTIME_ROOT = runtimeRoot;
const { startTestAgent } = await import("./helpers/agent.js");
const { spawnFailure } = await import("../../agent/exec/spawn-error.js");

let t: TestAgent;
before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
  await fs.rm(runtimeRoot, { recursive: true, force: true });
});

const text = (b: Buffer) => b.toString("utf8");

function envLines(out: Buffer): Map<string, string> {
  const env = new Map<string, string>();
  for (const line of text(out).split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) env.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return env;
}

async function rejectsWith(p: Promise<unknown>, code: StatusCode, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: Error) => {
    assert.equal(rpcCode(err), code, `expected ${Status[code]}, got ${String(rpcCode(err))}: ${err.message}`);
    if (message) assert.match(err.message, message);
    return true;
  });
}

test("a shell command sees its env, streams stdout and stderr, and reports its exit status", async () => {
  const r = await runExec(t.client, { command: 'echo "$X"; echo oops >&2; exit 3', env: { X: "hello world" } });
  assert.equal(text(r.stdout), "hello world\n");
  assert.equal(text(r.stderr), "oops\n");
  assert.equal(r.exit.code, 3);
  assert.equal(r.exit.signal, "");
  assert.equal(r.exit.timedOut, false);
  assert.ok(r.exit.durationMs > 0);
  assert.ok(r.pid > 0);
  assert.equal(r.order[0], "started");
  assert.equal(r.order[r.order.length - 1], "exit");
});

test("argv runs the program directly, without a shell", async () => {
  const r = await runExec(t.client, { argv: ["printf", "%s|", "a b", "$HOME", "*"] });
  assert.equal(text(r.stdout), "a b|$HOME|*|");
  assert.equal(r.exit.code, 0);
});

test("the environment: inherited minus agent settings, clean_env, unset_env, env", async () => {
  process.env.MEMOH_TEST_INHERITED = "inherited";
  process.env.BRIDGE_SOCKET_PATH = "/run/memoh/bridge.sock";
  try {
    const inherited = envLines((await runExec(t.client, { argv: ["env"], env: { ADDED: "1" } })).stdout);
    assert.equal(inherited.get("MEMOH_TEST_INHERITED"), "inherited");
    assert.equal(inherited.get("ADDED"), "1");
    assert.equal(inherited.has("BRIDGE_SOCKET_PATH"), false, "agent-private settings are not inherited");

    const unset = envLines((await runExec(t.client, { argv: ["env"], unsetEnv: ["MEMOH_TEST_INHERITED"] })).stdout);
    assert.equal(unset.has("MEMOH_TEST_INHERITED"), false);

    const clean = envLines((await runExec(t.client, { argv: ["env"], cleanEnv: true, env: { ONLY: "this" } })).stdout);
    assert.deepEqual([...clean.keys()].sort(), ["ONLY", "PATH"]);
    assert.equal(clean.get("PATH"), `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${toolkitBin}`);
  } finally {
    delete process.env.MEMOH_TEST_INHERITED;
    delete process.env.BRIDGE_SOCKET_PATH;
  }
});

test("PATH ends with the runtime toolkit: its programs are found, the image's win", async () => {
  const r = await runExec(t.client, { command: 'echo "$PATH"; memoh-probe' });
  const [pathLine, probe] = text(r.stdout).split("\n");
  assert.ok(pathLine!.endsWith(`:${toolkitBin}`), pathLine);
  assert.equal(probe, "toolkit-probe");

  const imageBin = path.join(t.root, "image-bin");
  await fs.mkdir(imageBin, { recursive: true });
  await fs.writeFile(path.join(imageBin, "memoh-probe"), "#!/bin/sh\necho image-probe\n", { mode: 0o755 });
  const own = await runExec(t.client, { argv: ["memoh-probe"], env: { PATH: `${imageBin}:/usr/bin:/bin` } });
  assert.equal(text(own.stdout), "image-probe\n");
});

test("cwd: empty is the data dir, relative resolves against it, missing is NOT_FOUND", async () => {
  await fs.mkdir(path.join(t.dataDir, "sub", "dir"), { recursive: true });
  await fs.writeFile(path.join(t.dataDir, "a-file"), "x");
  assert.equal(text((await runExec(t.client, { argv: ["pwd"] })).stdout), `${t.dataDir}\n`);
  assert.equal(text((await runExec(t.client, { argv: ["pwd"], cwd: "sub/dir" })).stdout), `${t.dataDir}/sub/dir\n`);
  assert.equal(text((await runExec(t.client, { command: "pwd", cwd: "/" })).stdout), "/\n");
  await rejectsWith(runExec(t.client, { argv: ["pwd"], cwd: "no/such/dir" }), Status.NOT_FOUND, /no\/such\/dir: no such directory/);
  await rejectsWith(runExec(t.client, { command: "pwd", cwd: "a-file" }), Status.FAILED_PRECONDITION, /not a directory/);
});

test("stdin: initial bytes, streamed chunks, then close_stdin ends the input", async () => {
  const s = new ExecSession(t.client, { argv: ["cat"], stdin: Buffer.from("first ") });
  await s.started;
  s.stdin("second ");
  s.stdin(Buffer.from([0xff, 0x00, 0x0a]));
  s.closeStdin();
  // The request stream stays open: close_stdin alone must end cat's input.
  const r = await s.done;
  assert.deepEqual(r.stdout, Buffer.concat([Buffer.from("first second "), Buffer.from([0xff, 0x00, 0x0a])]));
  assert.equal(r.exit.code, 0);
  s.end();

  const once = await runExec(t.client, { argv: ["wc", "-c"], stdin: Buffer.from("12345"), closeStdin: true });
  assert.equal(text(once.stdout).trim(), "5");
});

test("half-closing the request stream closes stdin", async () => {
  const r = await runExec(t.client, { argv: ["cat"] }, { stdin: ["via half-close\n"] });
  assert.equal(text(r.stdout), "via half-close\n");
  assert.equal(r.exit.code, 0);
});

test("stdin sent after close_stdin fails the call with INVALID_ARGUMENT", async () => {
  const s = new ExecSession(t.client, { argv: ["sleep", "100"], closeStdin: true });
  const pid = await s.started;
  s.stdin("too late");
  await rejectsWith(s.done, Status.INVALID_ARGUMENT, /after close_stdin/);
  await waitGone([pid]);
});

test("a signal goes to the process group: SIGTERM gives code 143", async () => {
  const s = new ExecSession(t.client, { argv: ["sleep", "100"] });
  await s.started;
  s.signal("SIGTERM");
  const r = await s.done;
  assert.equal(r.exit.code, 143);
  assert.equal(r.exit.signal, "SIGTERM");
  assert.equal(r.exit.timedOut, false);

  // Short and lower-case names work too, and reach every member of the group
  // (SIGTERM here: a non-interactive shell starts background jobs with SIGINT ignored).
  const g = new ExecSession(t.client, { command: "sleep 100 & echo $!; wait" });
  await g.waitForStdout(/^\d+\n/);
  const grandchild = Number(g.stdoutText().trim());
  g.signal("term");
  const gr = await g.done;
  assert.equal(gr.exit.code, 143);
  assert.equal(gr.exit.signal, "SIGTERM");
  await waitGone([grandchild]);
});

test("an unknown signal fails the call with INVALID_ARGUMENT and kills the process", async () => {
  const s = new ExecSession(t.client, { argv: ["sleep", "100"] });
  const pid = await s.started;
  s.signal("SIGNOPE");
  await rejectsWith(s.done, Status.INVALID_ARGUMENT, /unknown signal "SIGNOPE"/);
  await waitGone([pid]);
});

test("timeout_ms kills the whole group: timed_out within 2 s, nothing left behind", async () => {
  const begin = Date.now();
  const s = new ExecSession(t.client, { command: "sleep 100 & echo $!; sleep 100", timeoutMs: 1000 });
  const pid = await s.started;
  s.end();
  const r = await s.done;
  const elapsed = Date.now() - begin;
  assert.equal(r.exit.timedOut, true);
  assert.equal(r.exit.signal, "SIGKILL");
  assert.equal(r.exit.code, 137);
  assert.ok(elapsed >= 950 && elapsed < 2000, `took ${elapsed} ms`);
  const grandchild = Number(text(r.stdout).trim());
  assert.ok(grandchild > 0);
  await waitGone([pid, grandchild]);
});

test("a client cancel kills the whole group", async () => {
  const s = new ExecSession(t.client, { command: "sleep 100 & echo $!; sleep 100" });
  const pid = await s.started;
  await s.waitForStdout(/^\d+\n/);
  const grandchild = Number(s.stdoutText().trim());
  s.cancel();
  await assert.rejects(s.done, (err) => rpcCode(err) === Status.CANCELLED);
  await waitGone([pid, grandchild]);
  // The agent forgets the group once it is gone.
  const deadline = Date.now() + 1000;
  while (t.agent.ctx.children.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.agent.ctx.children.size, 0);
});

test("20 MB of output arrives complete, and the process waits while the client does not read", async () => {
  const size = 20_000_000;
  const s = new ExecSession(t.client, { command: `head -c ${size} /dev/zero; echo done >&2` });
  const pid = await s.started;
  s.end();
  s.call.pause();
  await new Promise((r) => setTimeout(r, 300));
  // Flow control reaches the pipe: head cannot have written everything yet.
  assert.equal(processGone(pid), false, "the writer finished although nobody read its output");
  s.call.resume();
  const r = await s.done;
  assert.equal(r.stdout.length, size);
  assert.ok(r.stdout.every((b) => b === 0));
  assert.equal(text(r.stderr), "done\n");
  assert.equal(r.exit.code, 0);
});

test("the exit is reported even when a background process keeps stdout open", async () => {
  const begin = Date.now();
  const r = await runExec(t.client, { command: "sleep 30 & echo $!" });
  const elapsed = Date.now() - begin;
  const background = Number(text(r.stdout).trim());
  assert.equal(r.exit.code, 0);
  assert.ok(elapsed < 2500, `took ${elapsed} ms`);
  assert.equal(processGone(background), false, "a background job is not the exec's to kill");
  process.kill(background, "SIGKILL");
});

test("invalid requests are INVALID_ARGUMENT", async () => {
  await rejectsWith(runExec(t.client, {}), Status.INVALID_ARGUMENT, /empty command/);
  await rejectsWith(runExec(t.client, { argv: [""] }), Status.INVALID_ARGUMENT, /empty command/);
  await rejectsWith(runExec(t.client, { argv: ["true"], command: "true" }), Status.INVALID_ARGUMENT, /not both/);
  await rejectsWith(runExec(t.client, { argv: ["echo", "a\0b"] }), Status.INVALID_ARGUMENT, /argv\[1\] contains a NUL/);
  await rejectsWith(runExec(t.client, { argv: ["true"], env: { X: "a\0b" } }), Status.INVALID_ARGUMENT, /NUL/);
  await rejectsWith(runExec(t.client, { argv: ["true"], env: { "A=B": "x" } }), Status.INVALID_ARGUMENT, /variable name/);
  await rejectsWith(runExec(t.client, { argv: ["true"], cwd: "a\0b" }), Status.INVALID_ARGUMENT, /cwd contains a NUL/);

  const call = t.client.bidi(ContainerService.method.exec);
  const failed = new Promise<unknown>((resolve) => call.on("error", resolve));
  call.on("data", () => {});
  call.write({ msg: { case: "stdin", value: Buffer.from("x") } });
  assert.equal(rpcCode(await failed), Status.INVALID_ARGUMENT);
});

test("a program that cannot start: NOT_FOUND, PERMISSION_DENIED; no /bin/sh is FAILED_PRECONDITION", async () => {
  await rejectsWith(runExec(t.client, { argv: ["memoh-no-such-program"] }), Status.NOT_FOUND, /memoh-no-such-program: command not found \(PATH=/);
  await rejectsWith(runExec(t.client, { argv: ["./missing.sh"] }), Status.NOT_FOUND, /missing\.sh: no such file/);
  await fs.writeFile(path.join(t.dataDir, "not-executable.sh"), "#!/bin/sh\necho hi\n", { mode: 0o644 });
  await rejectsWith(runExec(t.client, { argv: ["./not-executable.sh"] }), Status.PERMISSION_DENIED, /not-executable\.sh: permission denied/);
  // A distroless image has no /bin/sh: what spawning it answers there.
  const enoent = Object.assign(new Error("spawn /bin/sh ENOENT"), { code: "ENOENT" });
  const err = await spawnFailure(enoent, { file: "/bin/sh", cwd: t.dataDir, viaShell: true, pathValue: "/bin" });
  assert.equal(err.code, Status.FAILED_PRECONDITION);
  assert.match(err.message, /no shell; send argv/);
  // The agent still serves.
  assert.equal(text((await runExec(t.client, { argv: ["echo", "still here"] })).stdout), "still here\n");
});

test("without a working node-pty, a pty exec is FAILED_PRECONDITION and the rest still works", async () => {
  await rejectsWith(runExec(t.client, { argv: ["tty"], pty: true }), Status.FAILED_PRECONDITION, /PTY support is unavailable.*cannot open shared object/);
  const r = await runExec(t.client, { argv: ["echo", "pipes still work"] });
  assert.equal(text(r.stdout), "pipes still work\n");
});
