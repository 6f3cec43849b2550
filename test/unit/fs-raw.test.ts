// ReadRaw and WriteRaw through a real in-process agent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ContainerService, type ReadRawChunk } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient, Status, rpcCode } from "../../proto/rpc.js";
import { MiB, RAW_CHUNK_BYTES } from "../../agent/limits.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { BridgeClient } from "../../host/bridge/client.js";
import { readRawAll, rejectsWith, tempFilesIn, writeRawAll } from "./helpers/fs.js";

const m = ContainerService.method;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
let t: TestAgent;
let payload: Buffer;

before(async () => {
  t = await startTestAgent();
  payload = randomBytes(8 * MiB + 12345);
});
after(async () => {
  await t.close();
});

test("WriteRaw then ReadRaw round-trips 8 MiB; chunks are RAW_CHUNK_BYTES (256 KiB) with contiguous offsets", async () => {
  const res = await writeRawAll(t.client, "raw/nested/blob.bin", payload);
  assert.equal(res.bytesWritten, BigInt(payload.byteLength));
  assert.equal(res.sha256, sha256(payload));
  const onDisk = path.join(t.dataDir, "raw/nested/blob.bin");
  assert.equal((await fs.stat(onDisk)).mode & 0o7777, 0o644);
  assert.ok((await fs.readFile(onDisk)).equals(payload));
  assert.deepEqual(await tempFilesIn(path.dirname(onDisk)), []);

  const { chunks, data } = await readRawAll(t.client, { path: "raw/nested/blob.bin" });
  assert.equal(sha256(data), sha256(payload));
  assert.equal(chunks[0]!.fileSize, BigInt(payload.byteLength));
  let expected = 0n;
  for (const c of chunks) {
    assert.equal(c.offset, expected);
    assert.ok(c.data.byteLength > 0 && c.data.byteLength <= RAW_CHUNK_BYTES);
    expected += BigInt(c.data.byteLength);
  }
  assert.equal(chunks.length, Math.ceil(payload.byteLength / RAW_CHUNK_BYTES));
});

test("ReadRaw to a slow client with a small window: the blocks it reads into again carry every byte right", async () => {
  // The agent reads into a block again once all of its chunks were written to the
  // socket; a client that takes each chunk late makes every reuse wait on it.
  const data = randomBytes(6 * MiB + 777);
  await fs.writeFile(path.join(t.dataDir, "slow.bin"), data);
  const slow = new RpcClient(t.agent.target, undefined, { "grpc-node.flow_control_window": 65_535 });
  try {
    const call = slow.serverStream(m.readRaw, { path: "slow.bin" });
    const parts: Buffer[] = [];
    let n = 0;
    for await (const chunk of call as AsyncIterable<ReadRawChunk>) {
      parts.push(Buffer.from(chunk.data));
      if (++n % 3 === 0) await sleep(3);
    }
    const got = Buffer.concat(parts);
    assert.equal(got.byteLength, data.byteLength);
    assert.equal(sha256(got), sha256(data));
    assert.equal(n, Math.ceil(data.byteLength / RAW_CHUNK_BYTES));
  } finally {
    slow.close();
  }
});

test("ReadRaw honours offset and length; a length past EOF stops at EOF", async () => {
  await fs.writeFile(path.join(t.dataDir, "slice.bin"), payload.subarray(0, 1 * MiB));
  const mid = await readRawAll(t.client, { path: "slice.bin", offset: 100_000n, length: 300_000n });
  assert.ok(mid.data.equals(payload.subarray(100_000, 400_000)));
  assert.equal(mid.chunks[0]!.offset, 100_000n);
  assert.equal(mid.chunks[0]!.fileSize, BigInt(MiB));
  const tail = await readRawAll(t.client, { path: "slice.bin", offset: BigInt(MiB - 10), length: 1000n });
  assert.ok(tail.data.equals(payload.subarray(MiB - 10, MiB)));
  const restBytes = RAW_CHUNK_BYTES + 5_000;
  const rest = await readRawAll(t.client, { path: "slice.bin", offset: BigInt(MiB - restBytes) });
  assert.ok(rest.data.equals(payload.subarray(MiB - restBytes, MiB)));
  assert.deepEqual(rest.chunks.map((c) => c.data.byteLength), [RAW_CHUNK_BYTES, 5_000]);
});

test("ReadRaw of an empty file, or at EOF, sends one empty chunk carrying the size; past EOF is OUT_OF_RANGE", async () => {
  await fs.writeFile(path.join(t.dataDir, "empty.bin"), "");
  const empty = await readRawAll(t.client, { path: "empty.bin" });
  assert.equal(empty.chunks.length, 1);
  assert.deepEqual([empty.chunks[0]!.data.byteLength, empty.chunks[0]!.fileSize], [0, 0n]);
  await fs.writeFile(path.join(t.dataDir, "ten.bin"), "0123456789");
  const atEof = await readRawAll(t.client, { path: "ten.bin", offset: 10n });
  assert.equal(atEof.chunks.length, 1);
  assert.deepEqual([atEof.chunks[0]!.data.byteLength, atEof.chunks[0]!.offset, atEof.chunks[0]!.fileSize], [0, 10n, 10n]);
  await rejectsWith(readRawAll(t.client, { path: "ten.bin", offset: 11n }), Status.OUT_OF_RANGE, /past the end.*10 bytes/);
  await rejectsWith(readRawAll(t.client, { path: "empty.bin", offset: 1n }), Status.OUT_OF_RANGE);
});

test("ReadRaw rejects negative offsets, directories and missing files", async () => {
  await fs.writeFile(path.join(t.dataDir, "r.bin"), "abc");
  await rejectsWith(readRawAll(t.client, { path: "r.bin", offset: -1n }), Status.INVALID_ARGUMENT, /offset -1 is negative/);
  await rejectsWith(readRawAll(t.client, { path: "r.bin", length: -5n }), Status.INVALID_ARGUMENT, /length/);
  await fs.mkdir(path.join(t.dataDir, "rdir"));
  await rejectsWith(readRawAll(t.client, { path: "rdir" }), Status.INVALID_ARGUMENT, /is a directory/);
  await rejectsWith(readRawAll(t.client, { path: "no/such.bin" }), Status.NOT_FOUND, /no\/such\.bin/);
  await rejectsWith(readRawAll(t.client, { path: "" }), Status.INVALID_ARGUMENT);
});

test("ReadRaw waits for a slow reader and still delivers every byte", async () => {
  const call = t.client.serverStream(m.readRaw, { path: "raw/nested/blob.bin" });
  const parts: Uint8Array[] = [];
  let paused = false;
  for await (const chunk of call as AsyncIterable<ReadRawChunk>) {
    parts.push(chunk.data);
    if (!paused) {
      // Stall long enough for the agent's transport buffers to fill.
      paused = true;
      await sleep(300);
    }
  }
  assert.equal(sha256(Buffer.concat(parts)), sha256(payload));
});

test("a cancelled ReadRaw ends with CANCELLED and the agent keeps serving", async () => {
  const controller = new AbortController();
  const call = t.client.serverStream(m.readRaw, { path: "raw/nested/blob.bin" }, { signal: controller.signal });
  let received = 0;
  await assert.rejects(
    (async () => {
      for await (const chunk of call as AsyncIterable<ReadRawChunk>) {
        received += chunk.data.byteLength;
        if (received >= 4 * RAW_CHUNK_BYTES) controller.abort();
      }
    })(),
    (err) => rpcCode(err) === Status.CANCELLED,
  );
  assert.ok(received < payload.byteLength);
  assert.equal((await t.client.unary(m.info, {})).pid, process.pid);
});

test("WriteRaw sets the mode of a new file and keeps an existing file's mode", async () => {
  await writeRawAll(t.client, "modes/new.bin", randomBytes(10), { mode: 0o600 });
  assert.equal((await fs.stat(path.join(t.dataDir, "modes/new.bin"))).mode & 0o7777, 0o600);
  await fs.chmod(path.join(t.dataDir, "modes/new.bin"), 0o640);
  const res = await writeRawAll(t.client, "modes/new.bin", new Uint8Array(0), { mode: 0o600 });
  assert.deepEqual([res.bytesWritten, res.sha256], [0n, sha256(new Uint8Array(0))]);
  const st = await fs.stat(path.join(t.dataDir, "modes/new.bin"));
  assert.deepEqual([st.mode & 0o7777, st.size], [0o640, 0]);
});

async function seedOld(name: string): Promise<string> {
  const file = path.join(t.dataDir, "keep", name);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, "old content");
  return file;
}

test("a chunk out of order is INVALID_ARGUMENT naming expected and got; the target is untouched", async () => {
  const file = await seedOld("order.txt");
  const { call, response } = t.client.clientStream(m.writeRaw);
  call.write({ msg: { case: "start", value: { path: "keep/order.txt" } } });
  call.write({ msg: { case: "chunk", value: { data: new Uint8Array(100), offset: 0n } } });
  call.write({ msg: { case: "chunk", value: { data: new Uint8Array(100), offset: 50n } } });
  call.end();
  await rejectsWith(response, Status.INVALID_ARGUMENT, /expected 100, got 50/);
  assert.equal(await fs.readFile(file, "utf8"), "old content");
  assert.deepEqual(await tempFilesIn(path.dirname(file)), []);
});

test("WriteRaw must start with start; a second start or an empty stream is INVALID_ARGUMENT", async () => {
  const first = t.client.clientStream(m.writeRaw);
  first.call.write({ msg: { case: "chunk", value: { data: new Uint8Array(1), offset: 0n } } });
  first.call.end();
  await rejectsWith(first.response, Status.INVALID_ARGUMENT, /first WriteRaw message must be start/);

  const twice = t.client.clientStream(m.writeRaw);
  twice.call.write({ msg: { case: "start", value: { path: "keep/twice.txt" } } });
  twice.call.write({ msg: { case: "start", value: { path: "keep/twice.txt" } } });
  twice.call.end();
  await rejectsWith(twice.response, Status.INVALID_ARGUMENT, /only be sent once/);

  const none = t.client.clientStream(m.writeRaw);
  none.call.end();
  await rejectsWith(none.response, Status.INVALID_ARGUMENT, /ended before its start/);

  const badPath = t.client.clientStream(m.writeRaw);
  badPath.call.write({ msg: { case: "start", value: { path: "bad\0path" } } });
  badPath.call.end();
  await rejectsWith(badPath.response, Status.INVALID_ARGUMENT, /NUL/);
  await assert.rejects(fs.stat(path.join(t.dataDir, "keep/twice.txt")), { code: "ENOENT" });
});

test("abort discards what was sent: CANCELLED, old content kept, no temp file", async () => {
  const file = await seedOld("abort.txt");
  const { call, response } = t.client.clientStream(m.writeRaw);
  call.write({ msg: { case: "start", value: { path: "keep/abort.txt" } } });
  call.write({ msg: { case: "chunk", value: { data: new TextEncoder().encode("new content"), offset: 0n } } });
  call.write({ msg: { case: "abort", value: true } });
  call.end();
  await rejectsWith(response, Status.CANCELLED, /left untouched/);
  assert.equal(await fs.readFile(file, "utf8"), "old content");
  assert.deepEqual(await tempFilesIn(path.dirname(file)), []);
});

test("a client that cancels mid-upload leaves the target untouched and no temp file", async () => {
  const file = await seedOld("cancel.txt");
  const controller = new AbortController();
  const { call, response } = t.client.clientStream(m.writeRaw, { signal: controller.signal });
  call.write({ msg: { case: "start", value: { path: "keep/cancel.txt" } } });
  call.write({ msg: { case: "chunk", value: { data: new Uint8Array(1000), offset: 0n } } });
  // Wait until the agent has opened its temp file, then go away.
  for (let i = 0; i < 100 && (await tempFilesIn(path.dirname(file))).length === 0; i++) await sleep(10);
  assert.equal((await tempFilesIn(path.dirname(file))).length, 1, "the temp file should exist mid-upload");
  controller.abort();
  await rejectsWith(response, Status.CANCELLED);
  for (let i = 0; i < 100 && (await tempFilesIn(path.dirname(file))).length > 0; i++) await sleep(10);
  assert.deepEqual(await tempFilesIn(path.dirname(file)), []);
  assert.equal(await fs.readFile(file, "utf8"), "old content");
});

test("WriteRaw onto a directory is INVALID_ARGUMENT", async () => {
  await fs.mkdir(path.join(t.dataDir, "wdir"));
  await rejectsWith(writeRawAll(t.client, "wdir", new Uint8Array(3)), Status.INVALID_ARGUMENT, /is a directory/);
  assert.deepEqual(await tempFilesIn(t.dataDir), []);
});

test("WriteRaw through a dangling symlink creates its target relative to where the link really is", async () => {
  const base = path.join(t.dataDir, "raw-dangling");
  await fs.mkdir(path.join(base, "real/deep"), { recursive: true });
  await fs.symlink("real/deep", path.join(base, "sub"));
  await fs.symlink("../out.bin", path.join(base, "real/deep/link"));
  await fs.writeFile(path.join(base, "out.bin"), "not this one");
  const data = randomBytes(1000);
  await writeRawAll(t.client, "raw-dangling/sub/link", data);
  assert.ok((await fs.readFile(path.join(base, "real/out.bin"))).equals(data));
  assert.equal(await fs.readFile(path.join(base, "out.bin"), "utf8"), "not this one");
  assert.ok((await fs.lstat(path.join(base, "real/deep/link"))).isSymbolicLink());
});

test("ReadRaw streams procfs files, whose stat size is 0, to their end", async () => {
  const { chunks, data } = await readRawAll(t.client, { path: "/proc/self/status" });
  assert.equal(chunks[0]!.fileSize, 0n);
  assert.match(data.toString("utf8"), new RegExp(`^Pid:\\s+${process.pid}$`, "m"));
});

test("ReadRaw streams a sysfs file with a size whose reads come 4 KiB at a time (the kernel's BTF) whole, and a range of it", async () => {
  const btf = "/sys/kernel/btf/vmlinux";
  const whole = await fs.readFile(btf);
  assert.ok(whole.length > 1024 * 1024, `${btf}: ${whole.length} bytes`);
  const { chunks, data } = await readRawAll(t.client, { path: btf });
  assert.equal(chunks[0]!.fileSize, BigInt(whole.length));
  assert.equal(data.length, whole.length);
  assert.ok(data.equals(whole));
  const part = await readRawAll(t.client, { path: btf, offset: 10_000n, length: 300_000n });
  assert.ok(part.data.equals(whole.subarray(10_000, 310_000)));
});

test("an upload that goes silent is abandoned: DEADLINE_EXCEEDED, target untouched, no temp file", async () => {
  const quiet = await startTestAgent({ writeIdleMs: 300 });
  try {
    const file = path.join(quiet.dataDir, "idle.txt");
    await fs.writeFile(file, "old content");
    const { call, response } = quiet.client.clientStream(m.writeRaw);
    call.write({ msg: { case: "start", value: { path: "idle.txt" } } });
    call.write({ msg: { case: "chunk", value: { data: new Uint8Array(10), offset: 0n } } });
    // Neither end nor cancel: the client just stops talking.
    await rejectsWith(response, Status.DEADLINE_EXCEEDED, /left untouched/);
    assert.equal(await fs.readFile(file, "utf8"), "old content");
    assert.deepEqual(await tempFilesIn(quiet.dataDir), []);
    call.cancel();
  } finally {
    await quiet.close();
  }
});

test("BridgeClient.writeRaw whose source fails never commits, whether it failed before the first byte or after some", async () => {
  const client = new BridgeClient(t.agent.target);
  try {
    const file = await seedOld("failing-source.txt");
    for (let i = 0; i < 300; i++) {
      const bytes = i % 3 === 0 ? 0 : i % 3 === 1 ? 10 : RAW_CHUNK_BYTES + 7;
      async function* source(): AsyncGenerator<Uint8Array> {
        if (bytes > 0) yield new Uint8Array(bytes);
        throw new Error(`source broke after ${bytes} bytes`);
      }
      await assert.rejects(client.writeRaw("keep/failing-source.txt", source()), /source broke/);
      assert.equal(await fs.readFile(file, "utf8"), "old content", `attempt ${i} (${bytes} bytes) replaced the file`);
    }
    for (let i = 0; i < 100 && (await tempFilesIn(path.dirname(file))).length > 0; i++) await sleep(10);
    assert.deepEqual(await tempFilesIn(path.dirname(file)), []);
  } finally {
    client.close();
  }
});

test("ReadRaw with handoff: one chunk naming the agent's open fd of the file, held until the caller cancels, then closed; a file of size 0 is streamed", async () => {
  const client = new BridgeClient(t.agent.target);
  try {
    const data = randomBytes(3 * MiB + 5);
    const file = path.join(t.dataDir, "handoff.bin");
    await fs.writeFile(file, data);
    const st = await fs.stat(file, { bigint: true });
    const handed = await client.readRawHandoff("handoff.bin", { offset: 5, length: MiB });
    assert.ok(handed !== undefined);
    assert.equal(handed.fileSize, data.length);
    // The agent runs in this process here: its pid and descriptors are ours.
    assert.equal(handed.handoff.pid, process.pid);
    assert.equal(handed.handoff.dev, st.dev);
    assert.equal(handed.handoff.ino, st.ino);
    const link = `/proc/self/fd/${handed.handoff.fd}`;
    assert.equal(await fs.readlink(link), file);
    assert.ok((await fs.readFile(link)).equals(data));
    // Renamed away, the handed-off descriptor still is the file that was opened.
    await fs.rename(file, `${file}.moved`);
    assert.ok((await fs.readFile(link)).equals(data));
    handed.release();
    // Closed once the call is cancelled (the number may name another file later, never this one).
    for (let i = 0; i < 500 && (await fs.readlink(link).catch(() => "")) === `${file}.moved`; i++) await sleep(10);
    assert.notEqual(await fs.readlink(link).catch(() => ""), `${file}.moved`);

    await fs.writeFile(path.join(t.dataDir, "empty.bin"), "");
    assert.equal(await client.readRawHandoff("empty.bin"), undefined);
    assert.equal(await client.readRawHandoff("/proc/self/status"), undefined);
    await rejectsWith(client.readRawHandoff("handoff.bin.moved", { offset: data.length + 1 }), Status.OUT_OF_RANGE, /past the end/);
    await rejectsWith(client.readRawHandoff("."), Status.INVALID_ARGUMENT, /is a directory/);
    await rejectsWith(client.readRawHandoff("no-such-file"), Status.NOT_FOUND);
  } finally {
    client.close();
  }
});
