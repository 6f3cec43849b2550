// Request messages lease their announced size before the agent takes them in
// (agent/grpc/receive-budget.ts): calls that must wait for the budget are held
// by HTTP/2 flow control and served in full once it frees, unary and streaming
// alike; one that waits too long is refused and changes nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { startAgent, type RunningAgent } from "../../agent/server.js";
import { defaultReceiveBudgetOptions } from "../../agent/budget.js";
import { RECEIVE_COST_FACTOR, RECEIVE_UNLEASED_MAX_BYTES } from "../../agent/limits.js";
import { BridgeClient } from "../../host/bridge/client.js";
import { rpcCode, Status } from "../../proto/rpc.js";
import { halfSentMessages, waitFor } from "./helpers/load.js";

const KiB = 1024;
const MiB = 1024 * KiB;

async function agentWithBudget(capacity: number, maxWaitMs: number): Promise<{ agent: RunningAgent; dir: string; socketPath: string; client: BridgeClient }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-receive-budget-"));
  const socketPath = path.join(dir, "bridge.sock");
  const agent = await startAgent({
    dataDir: path.join(dir, "data"),
    socketPath,
    limits: { receiveBudget: { ...defaultReceiveBudgetOptions, capacity, maxWaitMs } },
  });
  return { agent, dir, socketPath, client: new BridgeClient(`unix:${socketPath}`) };
}

/**
 * A WriteFile call that announces `declared` bytes and sends all but the last:
 * it holds its lease until close() resets it.
 */
function holder(socketPath: string, declared: number): Promise<{ close(): void }> {
  return halfSentMessages(socketPath, "/memoh.bridge.v1.ContainerService/WriteFile", 1, 1, declared, 200);
}

test("WriteFiles that wait for the receive budget are served in full once it frees", async () => {
  // Room for one 1.5 MiB message (3 MiB at the cost factor) at a time.
  const { agent, dir, socketPath, client } = await agentWithBudget(4 * MiB, 20_000);
  let hold: { close(): void } | undefined;
  try {
    hold = await holder(socketPath, 1536 * KiB);
    await waitFor(() => agent.receiveBudget.inUse === 1536 * KiB * RECEIVE_COST_FACTOR, () => `the holder to be leased (${agent.receiveBudget.inUse} in use)`);
    const contents = [0, 1, 2].map((i) => Buffer.alloc(1536 * KiB, 0x61 + i));
    const writes = contents.map((content, i) => client.writeFile(`w${i}.txt`, content, 0, { timeoutMs: 30_000 }));
    for (const w of writes) w.catch(() => undefined); // awaited below; a failure must not be unhandled meanwhile
    await waitFor(() => agent.receiveBudget.waiting === 3, () => `the writes to wait for the budget (${agent.receiveBudget.waiting} waiting)`);
    // Nothing of the waiting writes is on disk yet.
    assert.deepEqual((await fs.readdir(path.join(dir, "data"))).filter((n) => n.startsWith("w")), []);
    hold.close();
    hold = undefined;
    await Promise.all(writes);
    for (const [i, content] of contents.entries()) assert.ok((await fs.readFile(path.join(dir, "data", `w${i}.txt`))).equals(content), `w${i}.txt is whole`);
    await waitFor(() => agent.receiveBudget.inUse === 0, () => `the budget to be returned (${agent.receiveBudget.inUse} in use)`);
    assert.ok(agent.receiveBudget.peak <= 4 * MiB);
  } finally {
    hold?.close();
    client.close();
    await agent.shutdown(100);
  }
});

test("a WriteRaw whose chunks wait for the receive budget mid-stream goes on where it stopped once it frees", async () => {
  const chunk = 64 * KiB; // the host's WriteRaw chunk: over the unleased size, so each is leased
  assert.ok(chunk > RECEIVE_UNLEASED_MAX_BYTES);
  const { agent, dir, socketPath, client } = await agentWithBudget(1 * MiB, 20_000);
  let hold: { close(): void } | undefined;
  try {
    // Leaves less than one chunk's lease free.
    hold = await holder(socketPath, 470 * KiB);
    await waitFor(() => agent.receiveBudget.inUse === 470 * KiB * RECEIVE_COST_FACTOR, "the holder to be leased");
    const content = Buffer.alloc(8 * MiB);
    for (let i = 0; i < content.length; i += 4) content.writeUInt32LE(i, i);
    const write = client.writeRaw("raw.bin", [content], { timeoutMs: 30_000 });
    await waitFor(() => agent.receiveBudget.waiting === 1, () => `the upload to wait (${agent.receiveBudget.waiting} waiting)`);
    hold.close();
    hold = undefined;
    const done = await write;
    assert.equal(done.bytesWritten, content.length);
    assert.equal(done.sha256, createHash("sha256").update(content).digest("hex"));
    assert.ok((await fs.readFile(path.join(dir, "data", "raw.bin"))).equals(content));
    await waitFor(() => agent.receiveBudget.inUse === 0, "the budget to be returned");
  } finally {
    hold?.close();
    client.close();
    await agent.shutdown(100);
  }
});

test("a request that waits longer than the budget's wait is refused with RESOURCE_EXHAUSTED naming the budget, and writes nothing", async () => {
  const { agent, dir, socketPath, client } = await agentWithBudget(2 * MiB, 300);
  const hold = await holder(socketPath, 800 * KiB);
  try {
    await waitFor(() => agent.receiveBudget.inUse > 0, "the holder to be leased");
    const err = await client.writeFile("late.txt", Buffer.alloc(600 * KiB, 0x62), 0, { timeoutMs: 10_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.equal(rpcCode(err), Status.RESOURCE_EXHAUSTED, String(err));
    assert.match((err as Error).message, /budget for request messages/);
    await assert.rejects(fs.stat(path.join(dir, "data", "late.txt")), { code: "ENOENT" });
    // The agent serves on, and small requests never wait.
    await client.info({ timeoutMs: 2_000 });
    await client.writeFile("small.txt", Buffer.from("fits\n"), 0, { timeoutMs: 2_000 });
    assert.equal(await fs.readFile(path.join(dir, "data", "small.txt"), "utf8"), "fits\n");
  } finally {
    hold.close();
    client.close();
    await agent.shutdown(100);
  }
});
