// Closed bridge clients stay closed: after client.close() / pool.close() no
// connection attempt reaches the agent's old address. grpc-js alone does not
// guarantee it: a subchannel released while backing off after a failed connect
// dials once more when its backoff ends, and toward a vanished legacy container
// IP that connect sits in SYN-SENT and holds the process open for minutes.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { startAgent, type RunningAgent } from "../../agent/server.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { BridgeClient } from "../../host/bridge/client.js";
import { BridgePool, legacyTarget } from "../../host/bridge/pool.js";

const dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-leak-test-"));
const agents: RunningAgent[] = [];

after(async () => {
  await Promise.all(agents.map((a) => a.shutdown(0)));
  await fs.rm(dataRoot, { recursive: true, force: true });
});

async function tcpAgent(name: string): Promise<{ agent: RunningAgent; port: number }> {
  const agent = await startAgent({ dataDir: path.join(dataRoot, name), tcpAddr: "127.0.0.1:0" });
  agents.push(agent);
  return { agent, port: Number(agent.target.slice(agent.target.lastIndexOf(":") + 1)) };
}

/** A port on 127.0.0.1 that refuses connections (a listener that was closed). */
async function refusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Listens on the port again and counts the connections that arrive within ms. */
async function countDialsFor(port: number, ms: number): Promise<number> {
  let accepted = 0;
  const server = net.createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  await new Promise((r) => setTimeout(r, ms));
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return accepted;
}

test("a closed client whose connect failed does not dial again when its backoff ends", async () => {
  const port = await refusedPort();
  // What the manager's readiness probe does: one call on a fresh client, then close.
  const probe = new BridgeClient(`127.0.0.1:${port}`, { defaultTimeoutMs: 2_000 });
  await assert.rejects(probe.info(), (err) => rpcCode(err) === Status.UNAVAILABLE);
  probe.close();
  // grpc-js's first reconnect backoff is 1 s (±20 %).
  assert.equal(await countDialsFor(port, 2_000), 0, "the closed client dialled its old address");
});

test("pool.close(): an entry that lost its agent and failed to reconnect never dials again", async () => {
  const { agent, port } = await tcpAgent("legacy");
  const pool = new BridgePool({ resolveTarget: () => legacyTarget("127.0.0.1", port), readyTimeoutMs: 700 });
  let closed = false;
  try {
    assert.ok((await pool.call("legacy", (c) => c.info())).pid > 0);
    // The legacy container goes away: its agent stops, its port refuses.
    await agent.shutdown(0);
    await assert.rejects(
      pool.call("legacy", (c) => c.info()),
      (err) => rpcCode(err) === Status.UNAVAILABLE,
    );
    pool.close();
    closed = true;
    // The pool's reconnect backoff is at most 2 s (±20 %).
    assert.equal(await countDialsFor(port, 3_000), 0, "the closed pool dialled the old address");
  } finally {
    if (!closed) pool.close();
  }
});
