// A workspace's root can replace its bridge.sock (in a dir it can write) with a
// symlink to another bot's socket, and a legacy container's IP can go to
// another workspace. The host must never reach the wrong agent: sockets are
// opened without following links and dialled through the checked fd, and every
// new connection must pass the workspace check (Info) before any call goes out.
// Against real agent processes on real sockets.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startAgent, type RunningAgent } from "../../agent/server.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { BridgeClient } from "../../host/bridge/client.js";
import {
  BridgePool,
  checkWorkspace,
  defaultSocketPath,
  legacyTarget,
  openBridgeClient,
  unixTarget,
  type EvictReason,
} from "../../host/bridge/pool.js";
import { BridgeSocketError, pinSocket } from "../../host/bridge/socket.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";

let dataRoot: string;
let agentA: AgentProcess;
let agentB: AgentProcess;
const socketA = () => defaultSocketPath(dataRoot, "a");
const socketB = () => defaultSocketPath(dataRoot, "b");
const realA = () => path.join(dataRoot, "run", "a", "real-bridge.sock");
const dataDir = (bot: string) => path.join(dataRoot, "data", bot);

before(async () => {
  dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-socket-test-"));
  [agentA, agentB] = await Promise.all(
    (["a", "b"] as const).map((bot) =>
      startAgentProcess({ socketPath: defaultSocketPath(dataRoot, bot), dataDir: dataDir(bot), env: { BRIDGE_WORKSPACE_ID: `workspace-${bot}` } }),
    ),
  );
});

after(async () => {
  await Promise.all([agentA?.stop(), agentB?.stop()]);
  await fs.rm(dataRoot, { recursive: true, force: true });
});

/** What the workspace's root of bot a does: its bridge.sock becomes a link to b's socket. */
async function linkAToB(): Promise<void> {
  await fs.rename(socketA(), realA());
  await fs.symlink(socketB(), socketA());
}

async function restoreA(): Promise<void> {
  await fs.rm(socketA());
  await fs.rename(realA(), socketA());
}

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

function makePool(workspaces = true): { pool: BridgePool; evictions: Array<[string, EvictReason]> } {
  const pool = new BridgePool({
    resolveTarget: (bot) => unixTarget(dataRoot, bot, workspaces ? `workspace-${bot}` : undefined),
    readyTimeoutMs: 3_000,
  });
  const evictions: Array<[string, EvictReason]> = [];
  pool.onEvict = (bot, reason) => evictions.push([bot, reason]);
  return { pool, evictions };
}

const LINK_REFUSED = /bridge of bot a at unix:.*\/run\/a\/bridge\.sock: .*bridge\.sock is a symbolic link, not a socket \(links there are never followed\)/;

test("pinSocket: a socket is dialled through /proc/self/fd/N; links, files and dirs are refused naming their type", async () => {
  const pinned = pinSocket(socketB());
  const client = new BridgeClient(pinned.address, { socket: pinned });
  try {
    assert.match(pinned.address, /^unix:\/proc\/self\/fd\/\d+$/);
    assert.equal((await client.info()).workspaceId, "workspace-b");
    assert.equal(pinned.stillAtPath(), true);
  } finally {
    client.close();
  }
  const scratch = await fs.mkdtemp(path.join(dataRoot, "scratch-"));
  await fs.symlink(socketB(), path.join(scratch, "link.sock"));
  await fs.writeFile(path.join(scratch, "file.sock"), "");
  await fs.mkdir(path.join(scratch, "dir.sock"));
  for (const [name, problem, message] of [
    ["link.sock", "not-a-socket", /link\.sock is a symbolic link, not a socket/],
    ["file.sock", "not-a-socket", /file\.sock is a regular file, not a socket/],
    ["dir.sock", "not-a-socket", /dir\.sock is a directory, not a socket/],
    ["missing.sock", "missing", /missing\.sock does not exist/],
  ] as const) {
    assert.throws(() => pinSocket(path.join(scratch, name)), (err: Error) => {
      assert.ok(err instanceof BridgeSocketError);
      assert.equal(err.problem, problem);
      assert.match(err.message, message);
      return true;
    });
  }
});

test("a pinned socket keeps reaching the socket that was checked after its path is swapped for a link", async () => {
  const pinned = pinSocket(socketA());
  await linkAToB();
  const client = new BridgeClient(pinned.address, { socket: pinned, channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
  try {
    // The first connection is made only now, after the swap.
    assert.equal((await client.info()).workspaceId, "workspace-a");
    assert.equal(pinned.stillAtPath(), false);
  } finally {
    client.close();
    await restoreA();
  }
});

test("bot a's socket replaced by a link to b's before the first call: calls for a fail clearly and reach nothing; they work once a's socket is back", async () => {
  await linkAToB();
  for (const workspaces of [true, false]) {
    const { pool } = makePool(workspaces);
    try {
      await assert.rejects(pool.call("a", (c) => c.writeFile("early.txt", "for a")), (err: Error) => {
        assert.equal(rpcCode(err), Status.UNAVAILABLE);
        assert.match(err.message, LINK_REFUSED);
        return true;
      });
      assert.equal(pool.has("a"), false);
    } finally {
      pool.close();
    }
  }
  // The manager's one-off probes refuse it the same way.
  assert.throws(() => openBridgeClient(unixTarget(dataRoot, "a")), (err: Error) => rpcCode(err) === Status.UNAVAILABLE && /symbolic link/.test(err.message));
  assert.equal(await exists(path.join(dataDir("b"), "early.txt")), false, "a call for a reached b");

  await restoreA();
  const { pool } = makePool();
  try {
    await pool.call("a", (c) => c.writeFile("early.txt", "for a"));
    assert.equal((await pool.call("a", (c) => c.info())).workspaceId, "workspace-a");
    assert.equal(await fs.readFile(path.join(dataDir("a"), "early.txt"), "utf8"), "for a");
    assert.equal(await exists(path.join(dataDir("b"), "early.txt")), false);
  } finally {
    pool.close();
  }
});

test("a's socket swapped back and forth while calls for a run in a loop: no call reaches b; calls fail while the link is there and work again after", async () => {
  const { pool } = makePool();
  const outcomes: Array<{ i: number; ok: boolean; linked: boolean; error?: string }> = [];
  let linked = false;
  let swapsDone = false;
  const SWAPS = 6;
  const callsDone = () => outcomes.length;
  // Each phase (linked or not) lasts until at least two calls ended in it, so
  // both outcomes occur; calls keep running while the path changes under them.
  const swapper = (async () => {
    for (let swap = 0; swap < SWAPS; swap++) {
      const seen = callsDone();
      const deadline = Date.now() + 10_000;
      while (callsDone() < seen + 2) {
        if (Date.now() > deadline) throw new Error("calls stopped making progress");
        await new Promise((r) => setTimeout(r, 5));
      }
      if (linked) await restoreA();
      else await linkAToB();
      linked = !linked;
    }
    if (linked) {
      await restoreA();
      linked = false;
    }
    swapsDone = true;
  })();
  try {
    for (let i = 0; !swapsDone; i++) {
      // Every call on a new connection: the pool's reuse of a live, checked
      // connection is legitimate and would hide the checks under test.
      pool.evict("a");
      const linkedAtStart = linked;
      try {
        await pool.call("a", async (c) => {
          await c.writeFile(`loop-${i}.txt`, `call ${i} for a`);
          const info = await c.info();
          assert.equal(info.workspaceId, "workspace-a", `call ${i} was answered by ${info.workspaceId}`);
        });
        outcomes.push({ i, ok: true, linked: linkedAtStart });
      } catch (err) {
        assert.equal(rpcCode(err), Status.UNAVAILABLE, String(err));
        // The path was a link, or absent for a moment (the swap renames the real socket aside first).
        assert.match((err as Error).message, /symbolic link, not a socket|the socket does not exist/);
        outcomes.push({ i, ok: false, linked: linkedAtStart, error: (err as Error).message });
      }
      // A refused call fails without I/O; let the swapper's timers run.
      await new Promise((r) => setImmediate(r));
    }
    await swapper;
  } finally {
    await swapper.catch(() => {});
    pool.close();
  }

  const succeeded = outcomes.filter((o) => o.ok);
  const failed = outcomes.filter((o) => !o.ok);
  assert.ok(succeeded.length > 0 && failed.length > 0, `successes ${succeeded.length}, failures ${failed.length}`);
  assert.ok(failed.some((o) => /symbolic link/.test(o.error ?? "")), "no call found the link");
  // b received nothing of a's: none of the loop's files is in b's data dir; all successful ones are in a's.
  const inB = (await fs.readdir(dataDir("b"))).filter((f) => f.startsWith("loop-"));
  assert.deepEqual(inB, []);
  const inA = new Set((await fs.readdir(dataDir("a"))).filter((f) => f.startsWith("loop-")));
  for (const o of succeeded) assert.ok(inA.has(`loop-${o.i}.txt`), `call ${o.i} succeeded but its file is not in a's data dir`);

  // Settled: with the link there calls fail, with the socket back they work.
  await linkAToB();
  const { pool: after } = makePool();
  try {
    await assert.rejects(after.call("a", (c) => c.info()), LINK_REFUSED);
    await restoreA();
    assert.equal((await after.call("a", (c) => c.info())).workspaceId, "workspace-a");
  } finally {
    after.close();
  }
});

test("a checked connection keeps reaching a after its path is swapped; when it closes, the entry goes and the link is refused", async () => {
  // grpc-js's shortest idle timeout closes the connection of a quiet channel.
  const pool = new BridgePool({
    resolveTarget: (bot) => unixTarget(dataRoot, bot, `workspace-${bot}`),
    readyTimeoutMs: 3_000,
    channelOptions: { "grpc.client_idle_timeout_ms": 1_000 },
  });
  const evictions: Array<[string, EvictReason]> = [];
  pool.onEvict = (bot, reason) => evictions.push([bot, reason]);
  try {
    const client = await pool.get("a");
    await linkAToB();
    // The live connection is to a's agent: it stays usable and reaches a.
    await client.writeFile("live.txt", "still a");
    assert.equal((await client.info()).workspaceId, "workspace-a");
    // Its connection closes; the path no longer names the pinned socket, so
    // the entry is dropped rather than reconnected.
    const deadline = Date.now() + 5_000;
    while (pool.has("a")) {
      if (Date.now() > deadline) assert.fail("the entry was not dropped when its connection closed");
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(evictions, [["a", "disconnected"]]);
    await assert.rejects(pool.call("a", (c) => c.info()), LINK_REFUSED);
    assert.equal(await exists(path.join(dataDir("b"), "live.txt")), false);
    assert.equal(await fs.readFile(path.join(dataDir("a"), "live.txt"), "utf8"), "still a");
  } finally {
    pool.close();
    await restoreA();
  }
});

test("an agent that serves another workspace is refused with UNAVAILABLE naming both identities", async () => {
  const pool = new BridgePool({ resolveTarget: () => unixTarget(dataRoot, "a", "workspace-z"), readyTimeoutMs: 3_000 });
  const evictions: Array<[string, EvictReason]> = [];
  pool.onEvict = (bot, reason) => evictions.push([bot, reason]);
  try {
    await assert.rejects(pool.call("a", (c) => c.writeFile("wrong.txt", "x")), (err: Error) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match(err.message, /bridge of bot a at unix:.*\/run\/a\/bridge\.sock: the agent there serves workspace "workspace-a", expected "workspace-z"/);
      return true;
    });
    assert.equal(pool.has("a"), false);
    assert.deepEqual(evictions.at(-1), ["a", "wrong-workspace"]);
    assert.equal(await exists(path.join(dataDir("a"), "wrong.txt")), false, "a call went out before the check");
  } finally {
    pool.close();
  }
  // The probe helper does the same check.
  const probe = openBridgeClient(unixTarget(dataRoot, "b", "workspace-a"));
  try {
    await assert.rejects(checkWorkspace(probe, unixTarget(dataRoot, "b", "workspace-a"), 3_000), /serves workspace "workspace-b", expected "workspace-a"/);
  } finally {
    probe.close();
  }
});

test("a legacy IP taken over by another workspace: the pool drops the entry when the connection closes and refuses the newcomer", async () => {
  const started: RunningAgent[] = [];
  const tcpAgent = async (workspaceId: string, addr: string) => {
    const agent = await startAgent({ dataDir: path.join(dataRoot, "data", workspaceId), tcpAddr: addr, workspaceId });
    started.push(agent);
    return agent;
  };
  const old = await tcpAgent("workspace-old", "127.0.0.1:0");
  const port = Number(old.target.slice(old.target.lastIndexOf(":") + 1));
  const pool = new BridgePool({ resolveTarget: () => legacyTarget("127.0.0.1", port, "workspace-old"), readyTimeoutMs: 2_000 });
  const evictions: Array<[string, EvictReason]> = [];
  pool.onEvict = (bot, reason) => evictions.push([bot, reason]);
  try {
    const held = await pool.get("legacy");
    await pool.call("legacy", (c) => c.writeFile("before.txt", "old"));
    await old.shutdown(0);
    await tcpAgent("workspace-new", `127.0.0.1:${port}`);
    await new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 3_000;
      const poll = () => (!pool.has("legacy") ? resolve() : Date.now() > deadline ? reject(new Error("entry not dropped")) : setTimeout(poll, 10));
      poll();
    });
    assert.deepEqual(evictions, [["legacy", "disconnected"]]);
    // A caller still holding the old client cannot reach the newcomer through it.
    await assert.rejects(held.writeFile("stale.txt", "for old"));
    await assert.rejects(pool.call("legacy", (c) => c.writeFile("after.txt", "for old")), (err: Error) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match(err.message, new RegExp(`bridge of bot legacy at 127\\.0\\.0\\.1:${port}: the agent there serves workspace "workspace-new", expected "workspace-old"`));
      return true;
    });
    const newcomerFiles = await fs.readdir(path.join(dataRoot, "data", "workspace-new"));
    assert.deepEqual(newcomerFiles, [], "a call for the old workspace reached the new one");
  } finally {
    pool.close();
    await Promise.all(started.map((a) => a.shutdown(0)));
  }
});
