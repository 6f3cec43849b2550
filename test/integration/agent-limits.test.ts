// The agent under the worst request patterns at once, inside a real workspace
// container whose memory limit (512 MiB) is a cgroup: large concurrent reads,
// unread stdin on pipe and pty Execs, unread ReadRaw streams, request messages
// announced large and never finished, idle connections.
// The agent must not be OOM-killed, must stay within its memory budget and
// must keep answering Info and small reads meanwhile.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient } from "../../proto/rpc.js";
import { AGENT_MEMORY_BUDGET_BYTES } from "../../agent/limits.js";
import { socketPath } from "../../host/workspace/paths.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { startWorkspaceFixture, type WorkspaceFixture } from "./env/workspace.js";
import { ExecSession } from "../unit/helpers/exec.js";
import {
  MiB,
  concurrentReads,
  floodStdin,
  halfSentMessages,
  idleConnections,
  memoryOf,
  mib,
  percentile,
  raisePriority,
  resetPeak,
  startProbe,
  unreadRawStreams,
  waitFor as waitUntil,
  writeLongLines,
  type Probe,
} from "../unit/helpers/load.js";

let fx: WorkspaceFixture;
let mgr: WorkspaceManager;

before(async () => {
  fx = await startWorkspaceFixture();
  mgr = fx.manager();
});

after(async () => {
  await fx?.close();
});

/** The host pid of the agent: the child of the task's init (tini). */
async function agentHostPid(taskPid: number): Promise<number> {
  const children = (await fs.readFile(`/proc/${taskPid}/task/${taskPid}/children`, "utf8")).trim().split(/\s+/).map(Number);
  assert.ok(children[0], `tini (${taskPid}) has no child`);
  return children[0];
}

test("in a workspace limited to 512 MiB, the worst patterns at once do not get the agent OOM-killed; it stays within its budget and keeps answering", async () => {
  const bot = fx.botName("agent-limits");
  const ws = await mgr.ensure(bot, { limits: { memoryBytes: 512 * MiB, cpus: 2, pids: 512 } });
  const sock = socketPath(fx.dataRoot, bot);
  const target = `unix:${sock}`;
  const load = new RpcClient(target);
  const execs = new RpcClient(target);
  const sessions: ExecSession[] = [];
  let streams: Awaited<ReturnType<typeof unreadRawStreams>> | undefined;
  let idleConns: Awaited<ReturnType<typeof idleConnections>> | undefined;
  let halfSent: Awaited<ReturnType<typeof halfSentMessages>> | undefined;
  let probe: Probe | undefined;
  try {
    assert.ok(ws.pid, "no task pid");
    const pid = await agentHostPid(ws.pid);
    const before = await mgr.call(bot, (c) => c.info());
    // The workspace's /data, from the host, through the agent's own root.
    const data = `/proc/${pid}/root/data`;
    await writeLongLines(path.join(data, "big.txt"), 1024, 8192);
    const fh = await fs.open(path.join(data, "huge.bin"), "w");
    await fh.truncate(64 * MiB);
    await fh.close();
    await fs.writeFile(path.join(data, "small.txt"), "a small file\n".repeat(50));
    // Load what an exec needs before the idle size is taken.
    await mgr.call(bot, (c) => c.exec({ command: "true" }));
    probe = await startProbe(target, "small.txt");
    await load.waitForReady(10_000);
    await execs.waitForReady(10_000);
    await raisePriority(pid);
    const idle = (await memoryOf(pid)).rss;
    await resetPeak(pid);

    for (const pty of [false, false, true, true]) sessions.push(new ExecSession(execs, { argv: ["sleep", "100"], pty }));
    await Promise.all(sessions.map((s) => s.started));
    const floods = sessions.map((s) => floodStdin(s.call, 64 * MiB, MiB));
    streams = await unreadRawStreams(target, "huge.bin", 4, 100);
    // Request messages announced at 16 MiB and never finished.
    halfSent = await halfSentMessages(sock, "/memoh.bridge.v1.ContainerService/WriteFile", 4, 100, 16 * MiB - 64, 500);
    idleConns = await idleConnections(sock, 500, 500);
    const reads = await concurrentReads(load, "big.txt", 300, 8 * MiB);
    const stdinTaken = await Promise.all(floods);
    // Streams beyond the ReadRaw budget wait their turn (up to 10 minutes), holding nothing.
    await waitUntil(() => streams!.started() >= 8 || streams!.errors().length > 0, () => `ReadRaw streams to get data (${streams!.summary()})`, 30_000);
    const peak = (await memoryOf(pid)).hwm;
    const seen = await probe.stop();
    console.log(
      `in a 512 MiB workspace: agent RSS idle ${mib(idle)}, peak ${mib(peak)} (+${mib(peak - idle)}); ` +
        `Info p50 ${percentile(seen.info, 50).toFixed(1)} ms, max ${Math.max(...seen.info).toFixed(1)} ms over ${seen.info.length} calls; ` +
        `small ReadFile p50 ${percentile(seen.read, 50).toFixed(1)} ms, max ${Math.max(...seen.read).toFixed(1)} ms; ` +
        `${reads.ok} of 300 large reads served, ${reads.exhausted} refused; stdin taken ${stdinTaken.map((b) => (b / MiB).toFixed(0)).join(", ")} MiB of 64 each; ` +
        `${streams.started()} ReadRaw streams got data, the others wait; ` +
        `${mib(halfSent.accepted())} of 400 half-sent 16 MiB requests taken`,
    );

    // Not OOM-killed: the same agent answers, the cgroup counted no OOM kill.
    const afterInfo = await mgr.call(bot, (c) => c.info());
    assert.equal(afterInfo.pid, before.pid, "the agent was restarted");
    const status = await mgr.status(bot);
    assert.equal(status.cgroup?.memory?.oomKills ?? 0, 0, `OOM kills in the workspace: ${JSON.stringify(status.cgroup?.memory)}`);
    assert.equal(status.task, "running");
    assert.deepEqual(seen.errors, [], "the probe's calls all succeed");
    assert.ok(seen.info.length >= 10 && seen.read.length >= 10, `the probe made ${seen.info.length} Info and ${seen.read.length} read calls`);
    assert.deepEqual(reads.other, []);
    assert.ok(reads.ok >= 10, `${reads.ok} of 300 large reads were served`);
    for (const taken of stdinTaken) assert.ok(taken < 64 * MiB, `an exec that never reads took all ${taken / MiB} MiB of stdin`);
    assert.deepEqual(streams.errors(), []);
    assert.ok(peak - idle <= AGENT_MEMORY_BUDGET_BYTES, `agent RSS grew by ${mib(peak - idle)}`);
    const small = await load.unary(ContainerService.method.readFile, { path: "small.txt" }, { timeoutMs: 5_000 });
    assert.equal(small.content, "a small file\n".repeat(50));
  } finally {
    probe?.kill();
    for (const s of sessions) s.cancel();
    streams?.close();
    idleConns?.close();
    halfSent?.close();
    load.close();
    execs.close();
  }
  await mgr.delete(bot);
});
