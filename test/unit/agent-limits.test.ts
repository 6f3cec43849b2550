// The agent's memory stays within AGENT_MEMORY_BUDGET_BYTES of its idle size
// and Info keeps answering within 100 ms at p99 (1 s at worst), whatever its callers do: measured on
// a real agent process (RSS and peak RSS from /proc), with the well-behaved
// client (helpers/probe-main.ts) in a process of its own.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient } from "../../proto/rpc.js";
import {
  AGENT_MEMORY_BUDGET_BYTES,
  HANDSHAKE_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_STREAMS_PER_CONNECTION,
} from "../../agent/limits.js";
import { limitsFromEnv, startAgent } from "../../agent/server.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { ExecSession, runExec, waitGone } from "./helpers/exec.js";
import {
  MiB,
  concurrentReads,
  fdCount,
  raisePriority,
  socketCount,
  floodStdin,
  halfSentMessages,
  idleConnections,
  memoryOf,
  mib,
  percentile,
  resetPeak,
  startProbe,
  unreadRawStreams,
  waitFor,
  writeLongLines,
  type Probe,
  type ProbeReport,
} from "./helpers/load.js";

// Info's latency is judged at p99, with a ceiling on the worst call. The worst
// single call on a shared 2-core VM includes the scheduler and the hypervisor: in
// the agent's own event loop (monitorEventLoopDelay) single stalls of 100–150 ms
// were measured with p99 at 17–39 ms, much of them first-touch page faults on fresh
// 8 MiB buffers (≈ 25 ms per buffer there, 0.9 ms once the pages are mapped). An
// Info stuck behind the load (waiting for a budget, an event loop blocked by a
// read) takes seconds and fails both.
const INFO_P99_MS = 100;
const INFO_MAX_MS = 1_000;
// Every pattern at once saturates both cores (the load, the agent, the probe and four
// execs flooded with stdin): there Info's p99 was 52–80 ms on one machine and 112 ms on
// one whose CPU is three times slower (`ctr task exec` 122 ms against 44 ms).
const INFO_P99_ALL_AT_ONCE_MS = 250;

async function smallFile(agent: AgentProcess): Promise<string> {
  await fs.mkdir(agent.dataDir, { recursive: true });
  await fs.writeFile(path.join(agent.dataDir, "small.txt"), "a small file\n".repeat(50));
  return "small.txt";
}

function report(name: string, idle: number, peak: number, probe: ProbeReport, extra = ""): void {
  console.log(
    `${name}: RSS idle ${mib(idle)}, peak ${mib(peak)} (+${mib(peak - idle)}, budget ${mib(AGENT_MEMORY_BUDGET_BYTES)}); ` +
      `Info p50 ${percentile(probe.info, 50).toFixed(1)} ms, p99 ${percentile(probe.info, 99).toFixed(1)} ms, max ${Math.max(...probe.info).toFixed(1)} ms over ${probe.info.length} calls; ` +
      `small ReadFile p50 ${percentile(probe.read, 50).toFixed(1)} ms, max ${Math.max(...probe.read).toFixed(1)} ms` +
      (extra ? `; ${extra}` : ""),
  );
}

function assertProbe(probe: ProbeReport, p99Limit = INFO_P99_MS): void {
  assert.deepEqual(probe.errors, [], "the probe's calls all succeed");
  assert.ok(probe.info.length >= 10, `Info was called ${probe.info.length} times`);
  assert.ok(probe.read.length >= 10, `the small ReadFile ran ${probe.read.length} times`);
  const p99 = percentile(probe.info, 99);
  assert.ok(p99 <= p99Limit, `Info took ${p99.toFixed(1)} ms at p99 (limit ${p99Limit} ms)`);
  const worst = Math.max(...probe.info);
  assert.ok(worst <= INFO_MAX_MS, `Info took up to ${worst.toFixed(1)} ms (limit ${INFO_MAX_MS} ms)`);
}

test("300 concurrent ReadFiles of an 8 MiB file stay within the memory budget; Info answers within 100 ms (p99) meanwhile", async () => {
  const agent = await startAgentProcess();
  let probe: Probe | undefined;
  const load = new RpcClient(`unix:${agent.socketPath}`);
  try {
    // 1024 lines of 8 KiB: the default window (2000 lines) is the whole file.
    await writeLongLines(path.join(agent.dataDir, "big.txt"), 1024, 8192);
    probe = await startProbe(`unix:${agent.socketPath}`, await smallFile(agent));
    await load.waitForReady(10_000);
    await raisePriority(agent.pid);
    const idle = (await memoryOf(agent.pid)).rss;
    await resetPeak(agent.pid);
    const outcome = await concurrentReads(load, "big.txt", 300, 8 * MiB);
    const peak = (await memoryOf(agent.pid)).hwm;
    const seen = await probe.stop();
    report("300 × ReadFile 8 MiB", idle, peak, seen, `${outcome.ok} served, ${outcome.exhausted} RESOURCE_EXHAUSTED`);
    assert.deepEqual(outcome.other, [], "every read is served in full or refused with RESOURCE_EXHAUSTED");
    assert.ok(outcome.ok >= 10, `${outcome.ok} of 300 reads were served`);
    assert.ok(peak - idle <= AGENT_MEMORY_BUDGET_BYTES, `RSS grew by ${mib(peak - idle)}`);
    assertProbe(seen);
  } finally {
    load.close();
    probe?.kill();
    await agent.stop();
  }
});

test("800 unread ReadRaw streams on 8 connections stay within the memory budget; Info answers within 100 ms (p99) meanwhile", async () => {
  // Streams beyond the budget are refused after 3 s here instead of 10 minutes.
  const agent = await startAgentProcess({ env: { BRIDGE_BUDGET_WAIT_MS: "3000" } });
  let probe: Probe | undefined;
  let streams: Awaited<ReturnType<typeof unreadRawStreams>> | undefined;
  try {
    const fh = await fs.open(path.join(agent.dataDir, "huge.bin"), "w");
    await fh.truncate(64 * MiB);
    await fh.close();
    probe = await startProbe(`unix:${agent.socketPath}`, await smallFile(agent));
    await raisePriority(agent.pid);
    const idle = (await memoryOf(agent.pid)).rss;
    await resetPeak(agent.pid);
    streams = await unreadRawStreams(`unix:${agent.socketPath}`, "huge.bin", 8, 100);
    // The agent sends into the streams it has budget for; every other one waits its turn in line and is refused.
    await waitFor(() => streams!.started() + streams!.exhausted() + streams!.errors().length >= 800, () => `every stream to get data, be refused or fail (${streams!.summary()})`, 30_000);
    const peak = (await memoryOf(agent.pid)).hwm;
    const seen = await probe.stop();
    report("800 unread ReadRaw streams", idle, peak, seen, `${streams.started()} streams got data, ${streams.exhausted()} were refused`);
    assert.deepEqual(streams.errors(), []);
    assert.ok(streams.started() >= 8, `${streams.started()} streams got data`);
    assert.ok(peak - idle <= AGENT_MEMORY_BUDGET_BYTES, `RSS grew by ${mib(peak - idle)}`);
    assertProbe(seen);
  } finally {
    streams?.close();
    probe?.kill();
    await agent.stop();
  }
});

test("1600 request messages announced at 16 MiB and sent without end stay within the memory budget; Info answers within 100 ms (p99) meanwhile; the budget frees when they go", async () => {
  // Messages beyond the budget are refused after 3 s here instead of 30.
  const agent = await startAgentProcess({ env: { BRIDGE_BUDGET_WAIT_MS: "3000" } });
  let probe: Probe | undefined;
  let flood: Awaited<ReturnType<typeof halfSentMessages>> | undefined;
  try {
    probe = await startProbe(`unix:${agent.socketPath}`, await smallFile(agent));
    await raisePriority(agent.pid);
    const idle = (await memoryOf(agent.pid)).rss;
    await resetPeak(agent.pid);
    // 16 connections × 100 WriteFiles that each announce 16 MiB and never send the last byte.
    flood = await halfSentMessages(agent.socketPath, "/memoh.bridge.v1.ContainerService/WriteFile", 16, 100, 16 * MiB - 64);
    // Those without a lease wait their turn and are refused.
    await waitFor(() => (flood!.statuses()["8"] ?? 0) > 0, () => `calls to be refused (${JSON.stringify(flood!.statuses())})`, 30_000);
    const peak = (await memoryOf(agent.pid)).hwm;
    const seen = await probe.stop();
    report("1600 half-sent 16 MiB requests", idle, peak, seen, `the agent took ${mib(flood.accepted())} of their bodies; statuses ${JSON.stringify(flood.statuses())}`);
    // Before the receive budget: 800 such calls made the agent take (and hold) 12.8 GiB.
    assert.ok(flood.accepted() <= AGENT_MEMORY_BUDGET_BYTES, `the agent took ${mib(flood.accepted())} of the requests`);
    assert.ok(peak - idle <= AGENT_MEMORY_BUDGET_BYTES, `RSS grew by ${mib(peak - idle)}`);
    assertProbe(seen);
    flood.close();
    flood = undefined;
    // The leases went with their calls: a whole 16 MiB WriteFile is served.
    const content = Buffer.alloc(15 * MiB, 0x61);
    await agent.client.unary(ContainerService.method.writeFile, { path: "whole.txt", content }, { timeoutMs: 30_000 });
    assert.equal((await fs.stat(path.join(agent.dataDir, "whole.txt"))).size, 15 * MiB);
  } finally {
    flood?.close();
    probe?.kill();
    await agent.stop();
  }
});

test(`a connection may run at most ${MAX_STREAMS_PER_CONNECTION} calls at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)`, async () => {
  const agent = await startAgentProcess();
  try {
    const session = http2.connect("http://agent", { createConnection: () => net.connect(agent.socketPath) });
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      assert.equal(settings.maxConcurrentStreams, MAX_STREAMS_PER_CONNECTION);
    } finally {
      session.destroy();
    }
  } finally {
    await agent.stop();
  }
});

test("thousands of idle connections: at most MAX_CONNECTIONS are kept, silent ones are closed after the handshake timeout, idle sessions after the idle timeout", async () => {
  const agent = await startAgentProcess({ env: { BRIDGE_CONNECTION_IDLE_MS: "3000" } });
  let probe: Probe | undefined;
  let idleConns: Awaited<ReturnType<typeof idleConnections>> | undefined;
  try {
    probe = await startProbe(`unix:${agent.socketPath}`, await smallFile(agent));
    await raisePriority(agent.pid);
    const idle = await memoryOf(agent.pid);
    const fdsBefore = await fdCount(agent.pid);
    await resetPeak(agent.pid);
    const t0 = Date.now();
    idleConns = await idleConnections(agent.socketPath, 1500, 1500);
    const fdsDuring = await fdCount(agent.pid);
    // The probe holds one connection; the rest of the slots went to the flood, every other connection was closed at once.
    await waitFor(() => {
      const c = idleConns!.closed();
      return c.silent + c.handshaken >= 3000 - MAX_CONNECTIONS;
    }, "connections beyond the cap to be closed");
    // Silent ones never complete the handshake: closed after HANDSHAKE_TIMEOUT_MS; handshaken ones after the idle time.
    await waitFor(() => idleConns!.closed().silent === 1500, "silent connections to be closed", HANDSHAKE_TIMEOUT_MS + 10_000);
    const silentClosedAfter = Date.now() - t0;
    await waitFor(() => idleConns!.closed().handshaken === 1500, "idle HTTP/2 sessions to be closed", 20_000);
    const fdsAfter = await fdCount(agent.pid);
    const peak = (await memoryOf(agent.pid)).hwm;
    // A new client gets in once the flood is gone.
    const fresh = new RpcClient(`unix:${agent.socketPath}`);
    try {
      const info = await fresh.unary(ContainerService.method.info, {}, { timeoutMs: 5_000 });
      assert.ok(info.pid > 0);
    } finally {
      fresh.close();
    }
    const seen = await probe.stop();
    report("3000 idle connections", idle.rss, peak, seen, `agent fds ${fdsBefore} before, ${fdsDuring} during, ${fdsAfter} after; silent ones all closed after ${silentClosedAfter} ms`);
    assert.ok(fdsDuring <= fdsBefore + MAX_CONNECTIONS + 4, `the agent had ${fdsDuring} fds open during the flood (${fdsBefore} before)`);
    assert.ok(fdsAfter <= fdsBefore + 4, `the agent kept ${fdsAfter} fds (${fdsBefore} before)`);
    assert.ok(peak - idle.rss <= AGENT_MEMORY_BUDGET_BYTES, `RSS grew by ${mib(peak - idle.rss)}`);
    assertProbe(seen);
  } finally {
    idleConns?.close();
    probe?.kill();
    await agent.stop();
  }
});

test("a connection that sends something other than the HTTP/2 preface is closed at once", async () => {
  const agent = await startAgentProcess();
  try {
    const s = net.connect(agent.socketPath);
    const closed = new Promise<number>((resolve) => {
      const t0 = Date.now();
      s.once("close", () => resolve(Date.now() - t0));
    });
    s.on("error", () => undefined);
    s.resume();
    s.write("GET / HTTP/1.1\r\nHost: agent\r\n\r\n");
    const ms = await closed;
    assert.ok(ms < HANDSHAKE_TIMEOUT_MS, `closed after ${ms} ms`);
    // The agent still serves.
    await agent.client.unary(ContainerService.method.info, {}, { timeoutMs: 5_000 });
  } finally {
    await agent.stop();
  }
});

test("the worst patterns at once (large reads, unread stdin on pipes and ptys, unread ReadRaw streams, half-sent requests, idle connections): RSS within the budget, Info and small reads keep answering", async () => {
  // Reads beyond the budget are refused after 5 s, ReadRaw streams too (instead of 10 minutes).
  const agent = await startAgentProcess({ env: { BRIDGE_BUDGET_WAIT_MS: "5000" } });
  let probe: Probe | undefined;
  const target = `unix:${agent.socketPath}`;
  const load = new RpcClient(target);
  const sessions: ExecSession[] = [];
  let streams: Awaited<ReturnType<typeof unreadRawStreams>> | undefined;
  let idleConns: Awaited<ReturnType<typeof idleConnections>> | undefined;
  let halfSent: Awaited<ReturnType<typeof halfSentMessages>> | undefined;
  try {
    // Load what an exec needs (node-pty included) before the idle size is taken.
    await runExec(agent.client, { command: "true", pty: true });
    await runExec(agent.client, { command: "true" });
    await writeLongLines(path.join(agent.dataDir, "big.txt"), 1024, 8192);
    const fh = await fs.open(path.join(agent.dataDir, "huge.bin"), "w");
    await fh.truncate(64 * MiB);
    await fh.close();
    probe = await startProbe(target, await smallFile(agent));
    await load.waitForReady(10_000);
    await raisePriority(agent.pid);
    const idle = (await memoryOf(agent.pid)).rss;
    await resetPeak(agent.pid);

    // Unread stdin: two pipe and two pty execs that never read, each offered 64 MiB.
    for (const pty of [false, false, true, true]) sessions.push(new ExecSession(agent.client, { argv: ["sleep", "100"], pty }));
    const pids = await Promise.all(sessions.map((s) => s.started));
    // Connections so far and the execs' stdio (socketpairs).
    const socketsBefore = await socketCount(agent.pid);
    const floods = sessions.map((s) => floodStdin(s.call, 64 * MiB, MiB));
    // Unread ReadRaw streams: 4 connections × 100.
    streams = await unreadRawStreams(target, "huge.bin", 4, 100);
    // Request messages announced at 16 MiB and never finished: 4 connections × 100.
    halfSent = await halfSentMessages(agent.socketPath, "/memoh.bridge.v1.ContainerService/WriteFile", 4, 100, 16 * MiB - 64, 500);
    // Idle connections: 500 silent, 500 HTTP/2 sessions without a call.
    idleConns = await idleConnections(agent.socketPath, 500, 500);
    const socketsDuring = await socketCount(agent.pid);
    // And 300 concurrent ReadFiles of 8 MiB.
    const reads = await concurrentReads(load, "big.txt", 300, 8 * MiB);
    const stdinTaken = await Promise.all(floods);
    await waitFor(() => streams!.started() + streams!.exhausted() + streams!.errors().length >= 400, () => `every ReadRaw stream to get data, be refused or fail (${streams!.summary()})`, 30_000);
    const peak = (await memoryOf(agent.pid)).hwm;
    const seen = await probe.stop();
    report(
      "all at once",
      idle,
      peak,
      seen,
      `${reads.ok} of 300 large reads served, ${reads.exhausted} refused; stdin taken per exec ${stdinTaken.map((b) => (b / MiB).toFixed(0)).join(", ")} MiB of 64; ` +
        `${streams.started()} ReadRaw streams got data, ${streams.exhausted()} refused; ` +
        `${mib(halfSent.accepted())} of 400 half-sent 16 MiB requests taken; agent sockets ${socketsBefore} before, ${socketsDuring} with the idle connections`,
    );
    assert.deepEqual(reads.other, []);
    assert.ok(reads.ok >= 10, `${reads.ok} of 300 large reads were served`);
    for (const taken of stdinTaken) assert.ok(taken < 64 * MiB, `an exec that never reads took all ${taken / MiB} MiB of stdin`);
    assert.deepEqual(streams.errors(), []);
    // The listener and at most MAX_CONNECTIONS connections (the exec pipes are socketpairs: counted before).
    assert.ok(socketsDuring <= socketsBefore + MAX_CONNECTIONS, `${socketsDuring} sockets with the idle connections (${socketsBefore} before)`);
    assert.ok(peak - idle <= AGENT_MEMORY_BUDGET_BYTES, `RSS grew by ${mib(peak - idle)}`);
    assertProbe(seen, INFO_P99_ALL_AT_ONCE_MS);
    for (const s of sessions) s.cancel();
    await waitGone(pids);
  } finally {
    for (const s of sessions) s.cancel();
    streams?.close();
    idleConns?.close();
    halfSent?.close();
    load.close();
    probe?.kill();
    await agent.stop();
  }
});

test("the legacy TCP listener has the same limits: connections beyond the cap are closed at once, silent ones after the handshake timeout", async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-agent-tcp-"));
  const agent = await startAgent({ dataDir: path.join(root, "data"), tcpAddr: "127.0.0.1:0", limits: { maxConnections: 4, handshakeTimeoutMs: 500 } });
  const sockets: net.Socket[] = [];
  try {
    const [host, port] = [agent.target.slice(0, agent.target.lastIndexOf(":")), Number(agent.target.slice(agent.target.lastIndexOf(":") + 1))];
    let closed = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        new Promise<void>((resolve) => {
          const s = net.connect(port, host);
          sockets.push(s);
          s.on("error", () => undefined);
          s.once("connect", () => resolve());
          s.once("close", () => {
            closed++;
            resolve();
          });
          s.resume();
        }),
      ),
    );
    await waitFor(() => agent.connections().refused === 6, () => `6 connections to be refused (${JSON.stringify(agent.connections())})`);
    assert.equal(agent.connections().open, 4);
    // The four it kept never send the preface: closed after 500 ms.
    await waitFor(() => closed === 10 && agent.connections().open === 0, () => `every connection to be closed (${closed} closed, ${JSON.stringify(agent.connections())})`, 5_000);
    assert.equal(agent.connections().noHandshake, 4);
    // A real client gets in afterwards.
    const client = new RpcClient(agent.target);
    try {
      assert.ok((await client.unary(ContainerService.method.info, {}, { timeoutMs: 5_000 })).pid > 0);
    } finally {
      client.close();
    }
  } finally {
    for (const s of sockets) s.destroy();
    await agent.shutdown(100);
    await fs.rm(root, { recursive: true, force: true });
  }
});

test("limits from BRIDGE_* variables: positive integers are taken, anything else is logged and the default kept", () => {
  const write = process.stderr.write.bind(process.stderr);
  const logged: string[] = [];
  process.stderr.write = ((chunk: string) => {
    logged.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    assert.deepEqual(limitsFromEnv({ BRIDGE_MAX_CONNECTIONS: "8", BRIDGE_CONNECTION_IDLE_MS: "2000" }), { maxConnections: 8, connectionIdleMs: 2000 });
    const waits = limitsFromEnv({ BRIDGE_BUDGET_WAIT_MS: "3000" });
    assert.equal(waits.fileBudget?.maxWaitMs, 3000);
    assert.equal(waits.streamBudget?.maxWaitMs, 3000);
    assert.deepEqual(limitsFromEnv({ BRIDGE_MAX_CONNECTIONS: "0", BRIDGE_HANDSHAKE_TIMEOUT_MS: "1.5", BRIDGE_MAX_STREAMS_PER_CONNECTION: "many", BRIDGE_FILE_BUDGET_BYTES: "1024" }), {});
  } finally {
    process.stderr.write = write;
  }
  const text = logged.join("");
  assert.match(text, /\$BRIDGE_MAX_CONNECTIONS: expected a positive integer, got "0"; using the default/);
  assert.match(text, /\$BRIDGE_HANDSHAKE_TIMEOUT_MS: expected a positive integer, got "1.5"/);
  assert.match(text, /\$BRIDGE_MAX_STREAMS_PER_CONNECTION: expected a positive integer, got "many"/);
  assert.match(text, /\$BRIDGE_FILE_BUDGET_BYTES: at least \d+ bytes; using the default/);
});
