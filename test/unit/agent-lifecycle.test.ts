// What the agent started is stopped whole (by session, not only by process
// group) on timeout, cancel, shutdown and crash; shutdown ends running calls with
// a status, removes unfinished temp files and leaves a socket it no longer owns.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { ExecSession, runExec, waitGone } from "./helpers/exec.js";
import { tempFilesIn } from "./helpers/fs.js";
import { McpSession } from "./helpers/mcp.js";

const crashPreload = path.join(import.meta.dirname, "helpers", "crash-on-signal.ts");

/** A shell line that starts a process in a process group of its own (same session), prints its pid, then sleeps. */
const ESCAPE = `perl -e 'setpgrp(0, 0); sleep 100' & echo $!`;

function statFields(pid: number, text: string): { pgrp: number; session: number } {
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  void pid;
  return { pgrp: Number(f[2]), session: Number(f[3]) };
}

/** Waits until `pid` leads its own process group inside session `sid` (perl's setpgrp has run). */
async function waitEscaped(pid: number, sid: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    if (text) {
      const st = statFields(pid, text);
      if (st.pgrp === pid && st.session === sid) return;
    }
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not move to a process group of its own in session ${sid}: ${text}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function waitExit(agent: AgentProcess, timeoutMs = 10_000): Promise<number | string> {
  const child = agent.child;
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode!;
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not exit within ${timeoutMs} ms: ${agent.stderr()}`)), timeoutMs);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal!);
    });
  });
}

async function withAgent(fn: (agent: AgentProcess) => Promise<void>, opts: Parameters<typeof startAgentProcess>[0] = {}): Promise<void> {
  const agent = await startAgentProcess(opts);
  try {
    await fn(agent);
  } finally {
    await agent.stop();
  }
}

for (const pty of [false, true]) {
  const mode = pty ? "pty" : "pipes";
  const nl = pty ? /^(\d+)\r\n/ : /^(\d+)\n/;

  test(`${mode}: timeout and cancel kill a process that moved to another process group of the session`, async () => {
    await withAgent(async (agent) => {
      const timed = new ExecSession(agent.client, { command: `${ESCAPE}; sleep 100`, pty, timeoutMs: 1500 });
      const leader = await timed.started;
      const escaped = Number(nl.exec(await timed.waitForStdout(nl))![1]);
      await waitEscaped(escaped, leader);
      const r = await timed.done;
      assert.equal(r.exit.timedOut, true);
      await waitGone([leader, escaped]);

      const cancelled = new ExecSession(agent.client, { command: `${ESCAPE}; sleep 100`, pty });
      const leader2 = await cancelled.started;
      const escaped2 = Number(nl.exec(await cancelled.waitForStdout(nl))![1]);
      await waitEscaped(escaped2, leader2);
      cancelled.cancel();
      await assert.rejects(cancelled.done, (err) => rpcCode(err) === Status.CANCELLED);
      await waitGone([leader2, escaped2]);
    });
  });
}

test("SIGTERM: a running exec and an MCP server end with their exit (SIGKILL) and a line saying why; what finished execs and MCP servers left behind is killed; exit 0", async () => {
  const agent = await startAgentProcess();
  try {
    // Left behind by an exec that completed normally: one in the leader's group, one in a group of its own.
    const finished = await runExec(agent.client, { command: `sleep 100 & echo $!; ${ESCAPE}` });
    assert.equal(finished.exit.code, 0);
    const [bg, escaped] = finished.stdout.toString().trim().split("\n").map(Number) as [number, number];
    await waitEscaped(escaped, finished.pid);

    // An MCP server that forked a child into a group of its own, then serves on.
    const mcp = new McpSession(agent.client, { command: "sh", args: ["-c", `${ESCAPE}; exec cat`] });
    const mcpPid = await mcp.started;
    const mcpChild = Number(await mcp.waitFor(() => mcp.noise.find((n) => /^\d+$/.test(n)), "the forked pid"));
    await waitEscaped(mcpChild, mcpPid);

    const running = new ExecSession(agent.client, { argv: ["sleep", "100"] });
    const runningPid = await running.started;

    agent.child.kill("SIGTERM");
    const ended = await running.done;
    assert.equal(ended.exit.signal, "SIGKILL");
    assert.match(ended.stderr.toString(), /^memoh-agent: the agent is shutting down; sleep \(pid \d+\) was killed\n$/);
    const mcpExit = await mcp.done;
    assert.equal(mcpExit.signal, "SIGKILL");
    assert.match(mcpExit.stderrTail.at(-1) ?? "", /the agent is shutting down; MCP server sh \(pid \d+\) was killed/);
    assert.equal(await waitExit(agent), 0);
    await waitGone([bg, escaped, mcpPid, mcpChild, runningPid]);
  } finally {
    await agent.stop();
  }
});

test("McpStdio: a client cancel kills a child the server forked into a group of its own", async () => {
  await withAgent(async (agent) => {
    const mcp = new McpSession(agent.client, { command: "sh", args: ["-c", `${ESCAPE}; exec cat`] });
    const pid = await mcp.started;
    const child = Number(await mcp.waitFor(() => mcp.noise.find((n) => /^\d+$/.test(n)), "the forked pid"));
    await waitEscaped(child, pid);
    mcp.call.cancel();
    await assert.rejects(mcp.done, (err) => rpcCode(err) === Status.CANCELLED);
    await waitGone([pid, child]);
  });
});

test("SIGTERM: the temp files of WriteRaws still in flight are removed before the agent exits", async () => {
  const agent = await startAgentProcess();
  try {
    const dir = path.join(agent.dataDir, "up");
    const calls = Array.from({ length: 40 }, (_, i) => {
      const { call, response } = agent.client.clientStream(ContainerService.method.writeRaw);
      response.catch(() => {});
      call.write({ msg: { case: "start", value: { path: `up/file-${i}.bin` } } });
      call.write({ msg: { case: "chunk", value: { data: new Uint8Array(100_000), offset: 0n } } });
      return call;
    });
    const deadline = Date.now() + 5000;
    while ((await tempFilesIn(dir).catch(() => [])).length < calls.length) {
      assert.ok(Date.now() < deadline, "the temp files did not appear");
      await new Promise((r) => setTimeout(r, 10));
    }
    agent.child.kill("SIGTERM");
    assert.equal(await waitExit(agent), 0);
    assert.deepEqual(await tempFilesIn(dir), []);
    assert.deepEqual(await fs.readdir(dir), []);
  } finally {
    await agent.stop();
  }
});

test("a draining agent does not delete a socket that another server has bound at its path since", async () => {
  const agent = await startAgentProcess();
  const other = net.createServer();
  try {
    // Another agent takes the path over (the old socket file was removed, a new one bound).
    await fs.unlink(agent.socketPath);
    await new Promise<void>((resolve, reject) => other.listen(agent.socketPath, resolve).once("error", reject));
    const before = await fs.lstat(agent.socketPath);
    agent.child.kill("SIGTERM");
    assert.equal(await waitExit(agent), 0);
    const after = await fs.lstat(agent.socketPath);
    assert.equal(after.ino, before.ino, "the new server's socket was deleted");
    assert.match(agent.stderr(), /no longer the socket this agent bound/);
  } finally {
    other.close();
    await agent.stop();
  }
});

test("a draining agent still removes its own socket", async () => {
  const agent = await startAgentProcess();
  try {
    agent.child.kill("SIGTERM");
    assert.equal(await waitExit(agent), 0);
    await assert.rejects(fs.lstat(agent.socketPath), (err) => (err as NodeJS.ErrnoException).code === "ENOENT");
  } finally {
    await agent.stop();
  }
});

for (const kind of ["exception", "rejection"] as const) {
  test(`an unhandled ${kind} makes the agent exit (70) after killing its sessions and removing its temp files`, async () => {
    const agent = await startAgentProcess({ nodeArgs: ["--import", crashPreload], env: { MEMOH_TEST_CRASH: kind } });
    try {
      const finished = await runExec(agent.client, { command: `${ESCAPE}` });
      const escaped = Number(finished.stdout.toString().trim());
      await waitEscaped(escaped, finished.pid);
      const running = new ExecSession(agent.client, { argv: ["sleep", "100"] });
      const runningPid = await running.started;
      const { call, response } = agent.client.clientStream(ContainerService.method.writeRaw);
      response.catch(() => {});
      call.write({ msg: { case: "start", value: { path: "crash/file.bin" } } });
      call.write({ msg: { case: "chunk", value: { data: new Uint8Array(1000), offset: 0n } } });
      const dir = path.join(agent.dataDir, "crash");
      const deadline = Date.now() + 5000;
      while ((await tempFilesIn(dir).catch(() => [])).length === 0) {
        assert.ok(Date.now() < deadline, "the temp file did not appear");
        await new Promise((r) => setTimeout(r, 10));
      }

      agent.child.kill("SIGUSR2");
      assert.equal(await waitExit(agent), 70);
      assert.match(agent.stderr(), kind === "exception" ? /uncaught exception: Error: injected uncaught exception/ : /unhandled rejection: Error: injected unhandled rejection/);
      await waitGone([escaped, runningPid]);
      assert.deepEqual(await tempFilesIn(dir), []);
      await assert.rejects(running.done);
    } finally {
      await agent.stop();
    }
  });
}
