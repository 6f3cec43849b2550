// The bridge pool against in-process agents: one client per bot, dead agents
// evicted and reached again once back, TCP (legacy) targets, explicit
// eviction, and bounded failures that name the bot.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { startAgent, type RunningAgent } from "../../agent/server.js";
import { RpcError, Status, rpcCode } from "../../proto/rpc.js";
import {
  BridgePool,
  defaultSocketPath,
  legacyTarget,
  targetAddress,
  unixTarget,
  type BridgePoolOptions,
  type BridgeTarget,
  type EvictReason,
} from "../../host/bridge/pool.js";

let dataRoot: string;
const agents: RunningAgent[] = [];

before(async () => {
  dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-pool-test-"));
});

after(async () => {
  await Promise.all(agents.map((a) => a.shutdown(0)));
  await fs.rm(dataRoot, { recursive: true, force: true });
});

/** An agent for bot at the pool's default socket path, with its own data dir. */
async function agentFor(bot: string): Promise<RunningAgent> {
  const agent = await startAgent({ dataDir: path.join(dataRoot, "data", bot), socketPath: defaultSocketPath(dataRoot, bot) });
  agents.push(agent);
  return agent;
}

function makePool(over: Partial<BridgePoolOptions> = {}): { pool: BridgePool; evictions: Array<[string, EvictReason]> } {
  const pool = new BridgePool({ resolveTarget: (bot) => unixTarget(dataRoot, bot), readyTimeoutMs: 2_000, ...over });
  const evictions: Array<[string, EvictReason]> = [];
  pool.onEvict = (bot, reason) => evictions.push([bot, reason]);
  return { pool, evictions };
}

async function until(what: string, check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP listener that accepts connections and never says anything. */
async function silentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

test("target addresses: default socket under the data root, legacy <ip>:9090", () => {
  assert.equal(targetAddress(unixTarget("/var/lib/memoh", "bot1")), "unix:/var/lib/memoh/run/bot1/bridge.sock");
  assert.equal(targetAddress(legacyTarget("10.88.0.5")), "10.88.0.5:9090");
  assert.equal(targetAddress(legacyTarget("fd00::5")), "[fd00::5]:9090");
  assert.throws(() => targetAddress({ kind: "unix", socketPath: "relative/bridge.sock" }), /must be absolute/);
  assert.throws(() => targetAddress({ kind: "tcp", host: "10.0.0.1", port: 70000 }), /out of range/);
});

test("two bots get two clients, each reaching its own agent; a bot's client is reused", async () => {
  await agentFor("alpha");
  await agentFor("beta");
  const { pool } = makePool();
  try {
    const a = await pool.get("alpha");
    const b = await pool.get("beta");
    assert.notEqual(a, b);
    assert.equal(await pool.get("alpha"), a);
    assert.equal(pool.size, 2);
    await pool.call("alpha", (c) => c.writeFile("who.txt", "alpha"));
    await pool.call("beta", (c) => c.writeFile("who.txt", "beta"));
    assert.equal(await fs.readFile(path.join(dataRoot, "data", "alpha", "who.txt"), "utf8"), "alpha");
    assert.equal(await fs.readFile(path.join(dataRoot, "data", "beta", "who.txt"), "utf8"), "beta");
    const info = await pool.call("beta", (c) => c.info());
    assert.equal(info.listen, `unix:${defaultSocketPath(dataRoot, "beta")}`);
    // Concurrent first calls for one bot share one client.
    const { pool: fresh } = makePool();
    try {
      const clients = await Promise.all(Array.from({ length: 8 }, () => fresh.get("alpha")));
      assert.equal(new Set(clients).size, 1);
    } finally {
      fresh.close();
    }
  } finally {
    pool.close();
  }
});

test("a killed agent's entry is evicted; a new agent on the same socket is reached on the next call", async () => {
  let agent = await agentFor("gamma");
  const { pool, evictions } = makePool({ readyTimeoutMs: 600 });
  try {
    const first = await pool.get("gamma");
    await pool.call("gamma", (c) => c.writeFile("a.txt", "1"));
    await agent.shutdown(0);
    await until("the entry to be evicted", () => !pool.has("gamma"));
    assert.deepEqual(evictions.at(-1), ["gamma", "disconnected"]);

    // While the agent is down: a bounded, clear failure that names the bot.
    const t0 = Date.now();
    await assert.rejects(pool.call("gamma", (c) => c.stat("a.txt")), (err) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match((err as Error).message, /bridge of bot gamma at unix:.*gamma\/bridge\.sock/);
      return true;
    });
    assert.ok(Date.now() - t0 < 3_000, `took ${Date.now() - t0} ms`);
    assert.equal(pool.has("gamma"), false);

    agent = await agentFor("gamma");
    const st = await pool.call("gamma", (c) => c.stat("a.txt"));
    assert.equal(st.info?.size, 1n);
    assert.notEqual(await pool.get("gamma"), first);
  } finally {
    pool.close();
  }
});

test("an agent restarted between calls is reached by the next call without an error", async () => {
  let agent = await agentFor("delta");
  const { pool } = makePool();
  try {
    await pool.call("delta", (c) => c.writeFile("x.txt", "x"));
    await agent.shutdown(0);
    agent = await agentFor("delta");
    assert.equal((await pool.call("delta", (c) => c.stat("x.txt"))).info?.size, 1n);
  } finally {
    pool.close();
  }
});

test("call() retries once after UNAVAILABLE on a fresh client, and not for other errors", async () => {
  await agentFor("epsilon");
  const { pool, evictions } = makePool();
  try {
    const seen: unknown[] = [];
    const result = await pool.call("epsilon", async (c) => {
      seen.push(c);
      if (seen.length === 1) throw new RpcError(Status.UNAVAILABLE, "connection reset");
      return (await c.info()).pid;
    });
    assert.equal(result, process.pid);
    assert.equal(seen.length, 2);
    assert.notEqual(seen[0], seen[1]);
    assert.deepEqual(evictions, [["epsilon", "unavailable"]]);

    // A NOT_FOUND from the agent is the answer, not a reason to retry.
    let calls = 0;
    await assert.rejects(
      pool.call("epsilon", (c) => {
        calls++;
        return c.stat("missing.txt");
      }),
      (err) => rpcCode(err) === Status.NOT_FOUND,
    );
    assert.equal(calls, 1);
    assert.equal(pool.has("epsilon"), true);

    // retry:false evicts but does not repeat, and names the bot.
    calls = 0;
    await assert.rejects(
      pool.call(
        "epsilon",
        () => {
          calls++;
          return Promise.reject(new RpcError(Status.UNAVAILABLE, "gone"));
        },
        { retry: false },
      ),
      /bridge of bot epsilon: gone/,
    );
    assert.equal(calls, 1);
    assert.equal(pool.has("epsilon"), false);
  } finally {
    pool.close();
  }
});

test("a legacy TCP target works", async () => {
  const agent = await startAgent({ dataDir: path.join(dataRoot, "data", "legacy"), tcpAddr: "127.0.0.1:0" });
  agents.push(agent);
  const port = Number(agent.target.slice(agent.target.lastIndexOf(":") + 1));
  const { pool } = makePool({ resolveTarget: () => legacyTarget("127.0.0.1", port) });
  try {
    assert.deepEqual(await pool.target("legacy"), { kind: "tcp", host: "127.0.0.1", port });
    await pool.call("legacy", (c) => c.writeFile("hello.txt", "tcp"));
    assert.equal(await fs.readFile(path.join(dataRoot, "data", "legacy", "hello.txt"), "utf8"), "tcp");
    assert.match((await pool.call("legacy", (c) => c.info())).listen, /^tcp:127\.0\.0\.1:/);
  } finally {
    pool.close();
  }
});

test("evict() on replace: the next call resolves the target again and reaches the new agent", async () => {
  const oldAgent = await agentFor("zeta");
  const replacement = await startAgent({ dataDir: path.join(dataRoot, "data", "zeta-new"), tcpAddr: "127.0.0.1:0" });
  agents.push(replacement);
  const port = Number(replacement.target.slice(replacement.target.lastIndexOf(":") + 1));
  let target: BridgeTarget = unixTarget(dataRoot, "zeta");
  let resolves = 0;
  const { pool, evictions } = makePool({
    resolveTarget: () => {
      resolves++;
      return target;
    },
  });
  try {
    const before = await pool.get("zeta");
    assert.equal((await pool.call("zeta", (c) => c.info())).dataDir, path.join(dataRoot, "data", "zeta"));
    target = legacyTarget("127.0.0.1", port);
    // Without eviction the pool keeps using the healthy old client.
    assert.equal(await pool.get("zeta"), before);
    pool.evict("zeta");
    assert.equal(pool.has("zeta"), false);
    assert.deepEqual(evictions, [["zeta", "explicit"]]);
    const after = await pool.get("zeta");
    assert.notEqual(after, before);
    assert.equal((await pool.call("zeta", (c) => c.info())).dataDir, path.join(dataRoot, "data", "zeta-new"));
    assert.equal(resolves, 2);
    // The evicted client is closed: it no longer makes calls.
    await assert.rejects(before.info({ timeoutMs: 500 }));
    assert.ok(oldAgent);
  } finally {
    pool.close();
  }
});

test("a target that never answers fails within the bound, naming the bot", async () => {
  const silent = await silentServer();
  const { pool } = makePool({ resolveTarget: () => legacyTarget("127.0.0.1", silent.port), readyTimeoutMs: 400 });
  try {
    const t0 = Date.now();
    await assert.rejects(pool.get("mute"), (err) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match((err as Error).message, new RegExp(`bridge of bot mute at 127\\.0\\.0\\.1:${silent.port}: not ready within 400 ms`));
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took >= 350 && took < 2_000, `took ${took} ms`);
    assert.equal(pool.has("mute"), false);

    // A missing socket (workspace not started) fails at once, naming the socket.
    const t1 = Date.now();
    const { pool: unixPool } = makePool({ readyTimeoutMs: 400 });
    try {
      await assert.rejects(unixPool.call("nobody", (c) => c.info()), /bridge of bot nobody at unix:.*nobody\/bridge\.sock: the socket does not exist/);
    } finally {
      unixPool.close();
    }
    assert.ok(Date.now() - t1 < 2_000);
  } finally {
    pool.close();
    silent.close();
  }
});

test("a channel stuck connecting longer than the limit is dropped with a clear error", async () => {
  const silent = await silentServer();
  const { pool, evictions } = makePool({
    resolveTarget: () => legacyTarget("127.0.0.1", silent.port),
    readyTimeoutMs: 10_000,
    stuckConnectingMs: 300,
  });
  try {
    const t0 = Date.now();
    await assert.rejects(pool.get("stuck"), (err) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match((err as Error).message, /bridge of bot stuck at .*: stuck connecting for more than 300 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 3_000, `took ${Date.now() - t0} ms`);
    assert.deepEqual(evictions[0], ["stuck", "stuck-connecting"]);
  } finally {
    pool.close();
    silent.close();
  }
});

test("an unresolvable bot fails with UNAVAILABLE naming it; a closed pool refuses", async () => {
  const { pool } = makePool({
    resolveTarget: (bot) => {
      throw new Error(`no container for ${bot}`);
    },
  });
  await assert.rejects(pool.get("ghost"), /bridge of bot ghost: cannot resolve its target: no container for ghost/);
  pool.close();
  await assert.rejects(pool.get("ghost"), /bridge pool is closed \(bot ghost\)/);
});

test("keepalive pings on an idle channel are accepted by the agent: the channel stays ready", async () => {
  await agentFor("eta");
  const { pool, evictions } = makePool({ keepaliveTimeMs: 100, keepaliveTimeoutMs: 1_000 });
  try {
    const client = await pool.get("eta");
    await new Promise((r) => setTimeout(r, 800));
    assert.deepEqual(evictions, []);
    assert.equal(await pool.get("eta"), client);
    assert.ok((await pool.call("eta", (c) => c.info())).pid > 0);
  } finally {
    pool.close();
  }
});

test("revalidateTarget: a changed target replaces the client without an explicit evict", async () => {
  await agentFor("theta");
  const moved = await startAgent({ dataDir: path.join(dataRoot, "data", "theta-moved"), tcpAddr: "127.0.0.1:0" });
  agents.push(moved);
  const port = Number(moved.target.slice(moved.target.lastIndexOf(":") + 1));
  let target: BridgeTarget = unixTarget(dataRoot, "theta");
  const { pool, evictions } = makePool({ resolveTarget: () => target, revalidateTarget: true });
  try {
    const first = await pool.get("theta");
    assert.equal(await pool.get("theta"), first);
    target = legacyTarget("127.0.0.1", port);
    assert.equal((await pool.call("theta", (c) => c.info())).dataDir, path.join(dataRoot, "data", "theta-moved"));
    assert.notEqual(await pool.get("theta"), first);
    assert.deepEqual(evictions, [["theta", "explicit"]]);
  } finally {
    pool.close();
  }
});

test("a channel that went IDLE (its idle timer closed the connection) is reconnected by the next call on the same entry", async () => {
  await agentFor("iota");
  // grpc-js's shortest idle timeout; the pool's default keeps the connection open.
  const { pool, evictions } = makePool({ channelOptions: { "grpc.client_idle_timeout_ms": 1_000 } });
  try {
    const client = await pool.get("iota");
    await pool.call("iota", (c) => c.writeFile("idle.txt", "before"));
    const channel = client.rpc.raw.getChannel();
    await until("the channel to close its connection", () => channel.getConnectivityState(false) !== grpc.connectivityState.READY, 5_000);
    assert.equal(pool.has("iota"), true, "the idle entry was dropped");
    assert.equal(channel.getConnectivityState(false), grpc.connectivityState.IDLE);
    const seen: unknown[] = [];
    const st = await pool.call("iota", (c) => {
      seen.push(c);
      return c.stat("idle.txt");
    });
    assert.equal(st.info?.size, 6n);
    assert.deepEqual(seen, [client], "the call after the idle gap used another client");
    assert.equal(await pool.get("iota"), client);
    assert.equal(channel.getConnectivityState(false), grpc.connectivityState.READY);
    assert.deepEqual(evictions, []);
  } finally {
    pool.close();
  }
});

test("a TCP entry is dropped as soon as its connection closes (the IP may go to another workspace); a fresh entry reaches the agent once back", async () => {
  // A unix entry whose agent stopped goes when its socket does (see "a killed
  // agent's entry"); a TCP entry goes when its connection does: a reconnect in
  // place would skip the identity check of whoever answers at that IP now.
  const tcp = await startAgent({ dataDir: path.join(dataRoot, "data", "kappa"), tcpAddr: "127.0.0.1:0" });
  agents.push(tcp);
  const port = Number(tcp.target.slice(tcp.target.lastIndexOf(":") + 1));
  const { pool, evictions } = makePool({ resolveTarget: () => legacyTarget("127.0.0.1", port), readyTimeoutMs: 600 });
  try {
    const before = await pool.get("kappa");
    await tcp.shutdown(0);
    await until("the entry to be dropped", () => !pool.has("kappa"));
    assert.deepEqual(evictions, [["kappa", "disconnected"]]);
    const t0 = Date.now();
    await assert.rejects(pool.call("kappa", (c) => c.info()), (err) => {
      assert.equal(rpcCode(err), Status.UNAVAILABLE);
      assert.match((err as Error).message, new RegExp(`bridge of bot kappa at 127\\.0\\.0\\.1:${port}: not ready within 600 ms`));
      return true;
    });
    assert.ok(Date.now() - t0 < 3_000, `took ${Date.now() - t0} ms`);
    assert.equal(pool.has("kappa"), false);
    assert.deepEqual(evictions, [["kappa", "disconnected"], ["kappa", "not-ready"]]);
    // Back on the same port: a fresh entry reaches it.
    const back = await startAgent({ dataDir: path.join(dataRoot, "data", "kappa"), tcpAddr: `127.0.0.1:${port}` });
    agents.push(back);
    assert.ok((await pool.call("kappa", (c) => c.info())).pid > 0);
    assert.notEqual(await pool.get("kappa"), before);
  } finally {
    pool.close();
  }
});
