// ReadFile of files larger than READ_FILE_WHOLE_MAX_BYTES: scanned in blocks,
// only the window kept. Every answer must equal what reading the whole file
// gives, whatever falls on a block boundary.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import path from "node:path";
import { ContainerService, ReadFileRequestSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { READ_FILE_SCAN_BLOCK_BYTES, READ_FILE_WHOLE_MAX_BYTES } from "../../agent/limits.js";
import { utf8Boundary } from "../../agent/fs/read.js";
import { startTestAgent } from "./helpers/agent.js";
import { waitFor } from "./helpers/load.js";
import { fileBudget, streamBudget } from "../../agent/budget.js";

/** Lines of varying length with 2-, 3- and 4-byte characters, some of which straddle the scan blocks. */
function mixedText(bytes: number, trailingNewline: boolean): Buffer {
  const parts: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const line = `${i}: ${"é".repeat(i % 7)}${"€".repeat(i % 5)}${"𝄞".repeat(i % 3)}${"x".repeat((i * 37) % 300)}\n`;
    parts.push(line);
    n += Buffer.byteLength(line);
  }
  const text = Buffer.from(parts.join(""));
  return trailingNewline ? text : text.subarray(0, text.lastIndexOf(0x0a));
}

function expected(text: Buffer, offset: number, limit: number) {
  const s = text.toString("utf8");
  const lines = s.split(/(?<=\n)/);
  if (lines[lines.length - 1] === "") lines.pop();
  const window = lines.slice(offset, offset + limit);
  return {
    content: window.join(""),
    totalLines: lines.length,
    lineCount: window.length,
    truncated: lines.length > offset + limit,
  };
}

test("ReadFile of a large file returns the same window, line counts and size as a whole read", async () => {
  const t = await startTestAgent();
  try {
    for (const trailing of [true, false]) {
      const text = mixedText(3 * 1024 * 1024 + 12345, trailing);
      assert.ok(text.byteLength > READ_FILE_WHOLE_MAX_BYTES);
      await fs.writeFile(path.join(t.dataDir, "big.txt"), text);
      const total = expected(text, 0, 1).totalLines;
      for (const [offset, limit] of [[0, 2000], [1, 5], [total - 3, 10], [total, 10], [total + 5, 1], [1000, 20000], [0, total]] as const) {
        const res = await t.client.unary(ContainerService.method.readFile, { path: "big.txt", lineOffset: offset, lineLimit: limit });
        const want = expected(text, offset, limit);
        assert.equal(res.binary, false);
        assert.equal(res.size, BigInt(text.byteLength));
        assert.equal(res.totalLines, want.totalLines, `total lines (offset ${offset}, limit ${limit})`);
        assert.equal(res.lineCount, want.lineCount, `line count (offset ${offset}, limit ${limit})`);
        assert.equal(res.truncated, want.truncated, `truncated (offset ${offset}, limit ${limit})`);
        assert.equal(res.lineOffset, offset);
        assert.ok(res.content === want.content, `content (offset ${offset}, limit ${limit})`);
      }
    }
  } finally {
    await t.close();
  }
});

test("ReadFile of a large file calls it binary for a NUL near the start, bad UTF-8 anywhere, or a cut-off last character", async () => {
  const t = await startTestAgent();
  try {
    const base = Buffer.from("line\n".repeat(400_000)); // 2 MB
    const cases: Array<[string, Buffer]> = [];
    const nul = Buffer.from(base);
    nul[100] = 0;
    cases.push(["NUL at byte 100", nul]);
    const bad = Buffer.from(base);
    bad[1_500_000] = 0xff;
    cases.push(["0xff at 1.5 MB", bad]);
    const straddle = Buffer.from(base);
    // A 3-byte sequence whose last byte is wrong, across the first block boundary.
    straddle.set([0xe2, 0x82, 0x41], READ_FILE_SCAN_BLOCK_BYTES - 2);
    cases.push(["a broken sequence across a block boundary", straddle]);
    cases.push(["a file that ends inside a character", Buffer.concat([base, Buffer.from([0xe2, 0x82])])]);
    for (const [what, bytes] of cases) {
      await fs.writeFile(path.join(t.dataDir, "bin.dat"), bytes);
      const res = await t.client.unary(ContainerService.method.readFile, { path: "bin.dat" });
      assert.equal(res.binary, true, what);
      assert.equal(res.content, "", what);
    }
    // The same characters, whole, across the boundary: text.
    const fine = Buffer.from(base);
    fine.set(Buffer.from("€"), READ_FILE_SCAN_BLOCK_BYTES - 1);
    await fs.writeFile(path.join(t.dataDir, "fine.txt"), fine);
    const res = await t.client.unary(ContainerService.method.readFile, { path: "fine.txt", lineLimit: 1 });
    assert.equal(res.binary, false);
    assert.equal(res.totalLines, fine.toString("utf8").split("\n").length - 1);
  } finally {
    await t.close();
  }
});

test("utf8Boundary keeps an unfinished character for the next block", () => {
  const euro = Buffer.from("a€"); // 61 e2 82 ac
  assert.equal(utf8Boundary(euro, 4), 4);
  assert.equal(utf8Boundary(euro, 3), 1);
  assert.equal(utf8Boundary(euro, 2), 1);
  assert.equal(utf8Boundary(euro, 1), 1);
  const clef = Buffer.from("𝄞"); // f0 9d 84 9e
  assert.equal(utf8Boundary(clef, 3), 0);
  assert.equal(utf8Boundary(clef, 4), 4);
  assert.equal(utf8Boundary(Buffer.from([0x80, 0x80, 0x80, 0x80]), 4), 4); // invalid: left for isUtf8
});

test("every lease goes back to its budget: after whole and windowed reads, a full ReadRaw and a cancelled one", async () => {
  const t = await startTestAgent();
  try {
    const files = fileBudget(t.agent.ctx);
    const streams = streamBudget(t.agent.ctx);
    await fs.writeFile(path.join(t.dataDir, "small.txt"), "hello\n");
    await fs.writeFile(path.join(t.dataDir, "big.txt"), mixedText(2 * 1024 * 1024, true));
    await fs.writeFile(path.join(t.dataDir, "blob.bin"), Buffer.alloc(8 * 1024 * 1024, 1));
    for (const p of ["small.txt", "big.txt", "blob.bin"]) await t.client.unary(ContainerService.method.readFile, { path: p });
    await Promise.all(Array.from({ length: 20 }, () => t.client.unary(ContainerService.method.readFile, { path: "big.txt", lineLimit: 100_000 })));
    let n = 0;
    for await (const chunk of t.client.serverStream(ContainerService.method.readRaw, { path: "blob.bin" })) n += chunk.data.length;
    assert.equal(n, 8 * 1024 * 1024);
    const ac = new AbortController();
    const call = t.client.serverStream(ContainerService.method.readRaw, { path: "blob.bin" }, { signal: ac.signal });
    await new Promise<void>((resolve) => call.once("data", () => resolve()));
    call.on("error", () => undefined);
    ac.abort();
    await waitFor(() => files.inUse === 0 && streams.inUse === 0, () => `the budgets to be empty (ReadFile ${files.inUse}, ReadRaw ${streams.inUse} bytes leased)`);
    assert.ok(files.peak > 0 && streams.peak > 0);
  } finally {
    await t.close();
  }
});

test("a ReadFile reply the client does not read keeps its lease until the call ends", async () => {
  const t = await startTestAgent();
  const session = http2.connect("http://agent", { createConnection: () => net.connect(path.join(t.root, "run", "bridge.sock")) });
  session.on("error", () => undefined);
  try {
    const files = fileBudget(t.agent.ctx);
    const text = mixedText(4 * 1024 * 1024, true);
    await fs.writeFile(path.join(t.dataDir, "big.txt"), text);
    const body = Buffer.from(toBinary(ReadFileRequestSchema, create(ReadFileRequestSchema, { path: "big.txt", lineLimit: 1_000_000 })));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
    frame.writeUInt32BE(body.byteLength, 1);
    const req = session.request({ ":method": "POST", ":path": `/${ContainerService.typeName}/ReadFile`, "content-type": "application/grpc", te: "trailers" });
    req.pause(); // never read: HTTP/2 flow control stops the reply after 64 KiB
    req.end(frame);
    await waitFor(() => files.inUse >= text.byteLength, () => `the reply's lease (${files.inUse} bytes leased)`);
    // The agent serves other calls meanwhile (each a turn of its event loop): the unread reply keeps its lease through them.
    for (let i = 0; i < 50; i++) await t.client.unary(ContainerService.method.info, {});
    assert.ok(files.inUse >= text.byteLength, "the lease was returned while the reply was still unread");
    session.destroy();
    await waitFor(() => files.inUse === 0, () => `the lease to come back once the connection is gone (${files.inUse} bytes leased)`);
  } finally {
    session.destroy();
    await t.close();
  }
});

test("ReadRaws opened ahead of the one being consumed (an export's lookahead) wait their turn for the budget instead of failing", async () => {
  const t = await startTestAgent();
  try {
    const streams = streamBudget(t.agent.ctx);
    const files = 40;
    const content = Buffer.alloc(4 * 1024 * 1024, 7);
    for (let i = 0; i < files; i++) await fs.writeFile(path.join(t.dataDir, `f${i}.bin`), content);
    // All opened at once, consumed one after the other, slowly: the last ones wait about 10 s.
    const calls = Array.from({ length: files }, (_, i) => t.client.serverStream(ContainerService.method.readRaw, { path: `f${i}.bin` }));
    for (const c of calls) c.on("error", () => undefined);
    await waitFor(() => streams.waiting > 0, "streams beyond the budget to wait");
    for (const [i, call] of calls.entries()) {
      let n = 0;
      for await (const chunk of call) n += chunk.data.length;
      assert.equal(n, content.byteLength, `f${i}.bin`);
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(streams.refused, 0);
    assert.ok(streams.peak <= streams.options.capacity);
  } finally {
    await t.close();
  }
});

test("ReadFile of a sysfs attribute (4096 bytes by fstat, no blocks, shorter when read) returns what it holds", async () => {
  const t = await startTestAgent();
  try {
    const file = "/sys/class/net/lo/mtu";
    const st = await fs.stat(file);
    assert.equal(st.blocks, 0, "a sysfs attribute has no blocks");
    const res = await t.client.unary(ContainerService.method.readFile, { path: file });
    assert.equal(res.content, await fs.readFile(file, "utf8"));
    assert.match(res.content, /^\d+\n$/);
    assert.equal(res.totalLines, 1);
  } finally {
    await t.close();
  }
});

test("ReadFile of a procfs file larger than its first lease (stat size 0, read in one pass) returns all of it", async () => {
  const t = await startTestAgent();
  try {
    const want = await fs.readFile("/proc/kallsyms");
    assert.ok(want.byteLength > 1024 * 1024, "this kernel's /proc/kallsyms is large");
    const res = await t.client.unary(ContainerService.method.readFile, { path: "/proc/kallsyms", lineLimit: 1_000_000 });
    assert.equal(res.binary, false);
    assert.equal(res.size, BigInt(Buffer.byteLength(res.content)));
    assert.ok(res.content.length > 1024 * 1024, `${res.content.length} characters`);
    assert.equal(res.lineCount, res.totalLines);
    assert.equal(fileBudget(t.agent.ctx).refused, 0);
    await waitFor(() => fileBudget(t.agent.ctx).inUse === 0, "the leases to come back");
  } finally {
    await t.close();
  }
});
