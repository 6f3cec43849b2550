// Stat, ReadFile and WriteFile through a real in-process agent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService, FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient, Status } from "../../proto/rpc.js";
import { READ_FILE_DEFAULT_LINES, READ_FILE_MAX_BYTES, MiB } from "../../agent/limits.js";
import { AtomicFile } from "../../agent/fs/atomic.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith, tempFilesIn } from "./helpers/fs.js";

const m = ContainerService.method;
const enc = (s: string) => new TextEncoder().encode(s);
let t: TestAgent;

before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

test("WriteFile creates parents with mode 0644 and ReadFile returns the content", async () => {
  const res = await t.client.unary(m.writeFile, { path: "a/b/c/hello.txt", content: enc("hello\nworld\n") });
  assert.equal(res.bytesWritten, 12n);
  const st = await fs.stat(path.join(t.dataDir, "a/b/c/hello.txt"));
  assert.equal(st.mode & 0o7777, 0o644);
  const read = await t.client.unary(m.readFile, { path: "a/b/c/hello.txt" });
  assert.equal(read.content, "hello\nworld\n");
  assert.equal(read.totalLines, 2);
  assert.equal(read.lineCount, 2);
  assert.equal(read.truncated, false);
  assert.equal(read.binary, false);
  assert.equal(read.size, 12n);
});

test("WriteFile: mode applies to new files exactly; an existing file keeps its mode", async () => {
  await t.client.unary(m.writeFile, { path: "modes/secret", content: enc("x"), mode: 0o600 });
  assert.equal((await fs.stat(path.join(t.dataDir, "modes/secret"))).mode & 0o7777, 0o600);
  await t.client.unary(m.writeFile, { path: "modes/wide", content: enc("x"), mode: 0o777 });
  assert.equal((await fs.stat(path.join(t.dataDir, "modes/wide"))).mode & 0o7777, 0o777, "not filtered by the umask");

  const kept = path.join(t.dataDir, "modes/kept.sh");
  await fs.writeFile(kept, "old");
  await fs.chmod(kept, 0o750);
  await t.client.unary(m.writeFile, { path: "modes/kept.sh", content: enc("new"), mode: 0o600 });
  assert.equal((await fs.stat(kept)).mode & 0o7777, 0o750);
  assert.equal(await fs.readFile(kept, "utf8"), "new");
  await rejectsWith(t.client.unary(m.writeFile, { path: "modes/bad", content: enc("x"), mode: 0o10000 }), Status.INVALID_ARGUMENT);
});

test("WriteFile keeps the owner of a file it replaces", async () => {
  assert.equal(process.geteuid?.(), 0, "the test suite runs as root (containerd needs it)");
  const file = path.join(t.dataDir, "modes/owned.txt");
  await fs.writeFile(file, "old");
  await fs.chown(file, 1234, 2345);
  await fs.chmod(file, 0o2750);
  await t.client.unary(m.writeFile, { path: "modes/owned.txt", content: enc("new") });
  const st = await fs.stat(file);
  assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1234, 2345, 0o2750]);
  assert.equal(await fs.readFile(file, "utf8"), "new");
});

test("WriteFile replaces by rename and leaves no temp file behind", async () => {
  const file = path.join(t.dataDir, "atomic/file.txt");
  await t.client.unary(m.writeFile, { path: "atomic/file.txt", content: enc("one") });
  const before = await fs.stat(file);
  await t.client.unary(m.writeFile, { path: "atomic/file.txt", content: enc("two, longer") });
  const afterSt = await fs.stat(file);
  assert.notEqual(afterSt.ino, before.ino, "a new inode means the old file was never written in place");
  assert.equal(await fs.readFile(file, "utf8"), "two, longer");
  assert.deepEqual(await fs.readdir(path.dirname(file)), ["file.txt"]);
});

test("a write that fails after the temp file exists removes it and keeps the target", async () => {
  const dir = path.join(t.dataDir, "fail-commit");
  await fs.mkdir(dir);
  const target = path.join(dir, "victim");
  const file = await AtomicFile.create(target, 0o644);
  await file.write(enc("partial"));
  assert.equal((await tempFilesIn(dir)).length, 1);
  // The target turns into a non-empty directory before the commit: rename(2) must fail.
  await fs.mkdir(path.join(target, "inner"), { recursive: true });
  await assert.rejects(file.commit());
  assert.deepEqual(await tempFilesIn(dir), []);
  assert.ok((await fs.stat(path.join(target, "inner"))).isDirectory());
});

test("WriteFile onto a directory is INVALID_ARGUMENT and leaves no litter", async () => {
  await fs.mkdir(path.join(t.dataDir, "adir/sub"), { recursive: true });
  await rejectsWith(t.client.unary(m.writeFile, { path: "adir/sub", content: enc("x") }), Status.INVALID_ARGUMENT, /is a directory/);
  await fs.symlink("sub", path.join(t.dataDir, "adir/link-to-sub"));
  await rejectsWith(t.client.unary(m.writeFile, { path: "adir/link-to-sub", content: enc("x") }), Status.INVALID_ARGUMENT, /is a directory/);
  assert.deepEqual((await fs.readdir(path.join(t.dataDir, "adir"))).sort(), ["link-to-sub", "sub"]);
});

test("WriteFile under a file is FAILED_PRECONDITION; onto a FIFO is refused, the FIFO survives", async () => {
  await fs.writeFile(path.join(t.dataDir, "plainfile"), "x");
  await rejectsWith(t.client.unary(m.writeFile, { path: "plainfile/child", content: enc("x") }), Status.FAILED_PRECONDITION, /not a directory/);
  const fifo = path.join(t.dataDir, "fifo");
  execFileSync("mkfifo", [fifo]);
  await rejectsWith(t.client.unary(m.writeFile, { path: "fifo", content: enc("x") }), Status.FAILED_PRECONDITION, /is a FIFO \(named pipe\), not a regular file/);
  assert.ok((await fs.lstat(fifo)).isFIFO());
  await rejectsWith(t.client.unary(m.readFile, { path: "fifo" }), Status.FAILED_PRECONDITION, /is a FIFO \(named pipe\), not a regular file/);
});

test("WriteFile writes through a symlink and keeps the link", async () => {
  await fs.mkdir(path.join(t.dataDir, "links"));
  await fs.writeFile(path.join(t.dataDir, "links/real.txt"), "old");
  await fs.symlink("real.txt", path.join(t.dataDir, "links/alias.txt"));
  await t.client.unary(m.writeFile, { path: "links/alias.txt", content: enc("new") });
  assert.ok((await fs.lstat(path.join(t.dataDir, "links/alias.txt"))).isSymbolicLink());
  assert.equal(await fs.readFile(path.join(t.dataDir, "links/real.txt"), "utf8"), "new");
});

test("WriteFile through a dangling symlink creates its target relative to where the link really is, as `cat > link` does", async () => {
  const base = path.join(t.dataDir, "dangling-nested");
  await fs.mkdir(path.join(base, "real/deep"), { recursive: true });
  await fs.symlink("real/deep", path.join(base, "sub"));
  await fs.symlink("../out.txt", path.join(base, "real/deep/link"));
  // What the link's target names when "../" is taken from the path the link was named by.
  await fs.writeFile(path.join(base, "out.txt"), "not this one");
  await t.client.unary(m.writeFile, { path: "dangling-nested/sub/link", content: enc("new") });
  assert.equal(await fs.readFile(path.join(base, "real/out.txt"), "utf8"), "new");
  assert.equal(await fs.readFile(path.join(base, "out.txt"), "utf8"), "not this one");
  assert.ok((await fs.lstat(path.join(base, "real/deep/link"))).isSymbolicLink());
  // The link now leads to a file: the next write replaces that file.
  await t.client.unary(m.writeFile, { path: "dangling-nested/sub/link", content: enc("newer") });
  assert.equal(await fs.readFile(path.join(base, "real/out.txt"), "utf8"), "newer");
  assert.deepEqual((await fs.readdir(base)).sort(), ["out.txt", "real", "sub"]);
  assert.deepEqual((await fs.readdir(path.join(base, "real"))).sort(), ["deep", "out.txt"]);
});

test("WriteFile through a chain of dangling symlinks creates the last link's target, each link read from where it lies", async () => {
  const base = path.join(t.dataDir, "dangling-chain");
  await fs.mkdir(path.join(base, "hop"), { recursive: true });
  await fs.symlink("hop/c1", path.join(base, "c0"));
  await fs.symlink("../c2", path.join(base, "hop/c1"));
  await t.client.unary(m.writeFile, { path: "dangling-chain/c0", content: enc("end of the chain") });
  assert.equal(await fs.readFile(path.join(base, "c2"), "utf8"), "end of the chain");
  assert.ok((await fs.lstat(path.join(base, "c0"))).isSymbolicLink());
  assert.ok((await fs.lstat(path.join(base, "hop/c1"))).isSymbolicLink());
  assert.deepEqual((await fs.readdir(base)).sort(), ["c0", "c2", "hop"]);
});

test("WriteFile follows up to 40 dangling symlinks as the kernel does; a 41st or a loop is INVALID_ARGUMENT and nothing is written", async () => {
  const base = path.join(t.dataDir, "dangling-limit");
  await fs.mkdir(base);
  // l0 -> l1 -> … -> l41, which does not exist: from l1, 40 links; from l0, 41.
  for (let i = 0; i <= 40; i++) await fs.symlink(`l${i + 1}`, path.join(base, `l${i}`));
  const names = await fs.readdir(base);
  await rejectsWith(t.client.unary(m.writeFile, { path: "dangling-limit/l0", content: enc("x") }), Status.INVALID_ARGUMENT, /too many levels of symbolic links/);
  assert.deepEqual((await fs.readdir(base)).sort(), names.sort(), "nothing written, no temp file");
  await t.client.unary(m.writeFile, { path: "dangling-limit/l1", content: enc("forty links") });
  assert.equal(await fs.readFile(path.join(base, "l41"), "utf8"), "forty links");

  const loop = path.join(t.dataDir, "dangling-loop");
  await fs.mkdir(loop);
  await fs.symlink("b", path.join(loop, "a"));
  await fs.symlink("a", path.join(loop, "b"));
  await rejectsWith(
    t.client.unary(m.writeFile, { path: "dangling-loop/a", content: enc("x") }),
    Status.INVALID_ARGUMENT,
    new RegExp(`${loop}/a: too many levels of symbolic links`),
  );
  assert.deepEqual((await fs.readdir(loop)).sort(), ["a", "b"]);
});

test("WriteFile through a dangling symlink ending in a slash is INVALID_ARGUMENT: it names a directory", async () => {
  const base = path.join(t.dataDir, "dangling-slash");
  await fs.mkdir(base);
  await fs.symlink("newdir/", path.join(base, "link"));
  await rejectsWith(t.client.unary(m.writeFile, { path: "dangling-slash/link", content: enc("x") }), Status.INVALID_ARGUMENT, /is a directory/);
  assert.deepEqual(await fs.readdir(base), ["link"]);
});

test("paths: empty and NUL are INVALID_ARGUMENT; absolute paths are used as is", async () => {
  await rejectsWith(t.client.unary(m.writeFile, { path: "", content: enc("x") }), Status.INVALID_ARGUMENT, /path is empty/);
  await rejectsWith(t.client.unary(m.writeFile, { path: "a\0b", content: enc("x") }), Status.INVALID_ARGUMENT, /NUL/);
  await rejectsWith(t.client.unary(m.readFile, { path: "" }), Status.INVALID_ARGUMENT);
  await rejectsWith(t.client.unary(m.stat, { path: "x\0" }), Status.INVALID_ARGUMENT);
  const outside = path.join(t.root, "outside.txt");
  await t.client.unary(m.writeFile, { path: outside, content: enc("abs") });
  assert.equal(await fs.readFile(outside, "utf8"), "abs");
  const st = await t.client.unary(m.stat, { path: outside });
  assert.equal(st.info?.path, outside);
});

test("missing paths are NOT_FOUND and the message names the path", async () => {
  const missing = path.join(t.dataDir, "nope/missing.txt");
  await rejectsWith(t.client.unary(m.readFile, { path: "nope/missing.txt" }), Status.NOT_FOUND, new RegExp(missing));
  await rejectsWith(t.client.unary(m.stat, { path: "nope/missing.txt" }), Status.NOT_FOUND, new RegExp(missing));
});

test("Stat describes files, directories and symlinks without following them", async () => {
  await fs.mkdir(path.join(t.dataDir, "st"));
  await fs.writeFile(path.join(t.dataDir, "st/f"), "12345");
  await fs.chmod(path.join(t.dataDir, "st/f"), 0o640);
  await fs.symlink("/nowhere/at/all", path.join(t.dataDir, "st/dangling"));
  const f = (await t.client.unary(m.stat, { path: "st/f" })).info!;
  assert.equal(f.path, path.join(t.dataDir, "st/f"));
  assert.equal(f.name, "f");
  assert.equal(f.type, FileType.FILE);
  assert.equal(f.mode, 0o640);
  assert.equal(f.size, 5n);
  assert.ok(Math.abs(Number(f.mtimeMs) - Date.now()) < 60_000);
  assert.equal(f.symlinkTarget, "");
  const l = (await t.client.unary(m.stat, { path: "st/dangling" })).info!;
  assert.equal(l.type, FileType.SYMLINK);
  assert.equal(l.symlinkTarget, "/nowhere/at/all");
  const d = (await t.client.unary(m.stat, { path: "st" })).info!;
  assert.equal(d.type, FileType.DIRECTORY);
  const root = (await t.client.unary(m.stat, { path: "/" })).info!;
  assert.equal(root.name, "/");
});

test("ReadFile windows lines, keeps line endings and counts a final unterminated line", async () => {
  await fs.writeFile(path.join(t.dataDir, "lines.txt"), "a\nb\r\nc\nd\ne");
  const all = await t.client.unary(m.readFile, { path: "lines.txt" });
  assert.equal(all.totalLines, 5);
  assert.equal(all.content, "a\nb\r\nc\nd\ne");
  const mid = await t.client.unary(m.readFile, { path: "lines.txt", lineOffset: 1, lineLimit: 2 });
  assert.deepEqual([mid.content, mid.lineOffset, mid.lineCount, mid.totalLines, mid.truncated], ["b\r\nc\n", 1, 2, 5, true]);
  const tail = await t.client.unary(m.readFile, { path: "lines.txt", lineOffset: 3, lineLimit: 10 });
  assert.deepEqual([tail.content, tail.lineCount, tail.truncated], ["d\ne", 2, false]);
  const past = await t.client.unary(m.readFile, { path: "lines.txt", lineOffset: 9 });
  assert.deepEqual([past.content, past.lineCount, past.totalLines, past.truncated], ["", 0, 5, false]);

  await fs.writeFile(path.join(t.dataDir, "empty.txt"), "");
  const empty = await t.client.unary(m.readFile, { path: "empty.txt" });
  assert.deepEqual([empty.content, empty.totalLines, empty.lineCount, empty.size], ["", 0, 0, 0n]);
  await fs.writeFile(path.join(t.dataDir, "one.txt"), "only\n");
  assert.equal((await t.client.unary(m.readFile, { path: "one.txt" })).totalLines, 1);
});

test("ReadFile returns READ_FILE_DEFAULT_LINES lines by default", async () => {
  const lines = Array.from({ length: READ_FILE_DEFAULT_LINES + 500 }, (_, i) => `line ${i}\n`);
  await fs.writeFile(path.join(t.dataDir, "long.txt"), lines.join(""));
  const r = await t.client.unary(m.readFile, { path: "long.txt" });
  assert.equal(r.lineCount, READ_FILE_DEFAULT_LINES);
  assert.equal(r.totalLines, READ_FILE_DEFAULT_LINES + 500);
  assert.equal(r.truncated, true);
  assert.equal(r.content, lines.slice(0, READ_FILE_DEFAULT_LINES).join(""));
  const last = await t.client.unary(m.readFile, { path: "long.txt", lineOffset: READ_FILE_DEFAULT_LINES + 499, lineLimit: 5 });
  assert.equal(last.content, `line ${READ_FILE_DEFAULT_LINES + 499}\n`);
});

test("ReadFile reports binary files (NUL byte, invalid UTF-8) without content; UTF-8 text is text", async () => {
  await fs.writeFile(path.join(t.dataDir, "nul.bin"), Buffer.from([0x41, 0x00, 0x42, 0x0a]));
  const nul = await t.client.unary(m.readFile, { path: "nul.bin" });
  assert.deepEqual([nul.binary, nul.content, nul.size], [true, "", 4n]);
  await fs.writeFile(path.join(t.dataDir, "latin1.txt"), Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0a]));
  const latin1 = await t.client.unary(m.readFile, { path: "latin1.txt" });
  assert.deepEqual([latin1.binary, latin1.content], [true, ""]);
  const text = "héllo wörld\n日本語\n🙂\n";
  await fs.writeFile(path.join(t.dataDir, "utf8.txt"), text);
  const utf8 = await t.client.unary(m.readFile, { path: "utf8.txt" });
  assert.deepEqual([utf8.binary, utf8.content, utf8.totalLines], [false, text, 3]);
  assert.equal(utf8.size, BigInt(Buffer.byteLength(text)));
});

test("ReadFile of a directory is INVALID_ARGUMENT", async () => {
  await fs.mkdir(path.join(t.dataDir, "rd-dir"));
  await rejectsWith(t.client.unary(m.readFile, { path: "rd-dir" }), Status.INVALID_ARGUMENT, /is a directory/);
});

test("ReadFile over the limit is RESOURCE_EXHAUSTED naming size, limit and ReadRaw; the agent keeps serving", async () => {
  const big = path.join(t.dataDir, "big.log");
  const fh = await fs.open(big, "w");
  await fh.truncate(READ_FILE_MAX_BYTES + 1);
  await fh.close();
  await rejectsWith(
    t.client.unary(m.readFile, { path: "big.log" }),
    Status.RESOURCE_EXHAUSTED,
    new RegExp(`${READ_FILE_MAX_BYTES + 1} bytes.*${READ_FILE_MAX_BYTES}.*ReadRaw`),
  );
  const info = await t.client.unary(m.info, {});
  assert.equal(info.pid, process.pid);
});

test("a WriteFile message over 16 MiB is RESOURCE_EXHAUSTED on both ends; the agent keeps serving", async () => {
  const content = new Uint8Array(17 * MiB);
  // Our own client refuses to send it...
  await rejectsWith(t.client.unary(m.writeFile, { path: "huge.bin", content }), Status.RESOURCE_EXHAUSTED);
  // ...and a client without that limit is refused by the agent.
  const loose = new RpcClient(t.agent.target, undefined, { "grpc.max_send_message_length": 64 * MiB });
  try {
    await rejectsWith(loose.unary(m.writeFile, { path: "huge.bin", content }), Status.RESOURCE_EXHAUSTED);
    assert.equal((await loose.unary(m.info, {})).pid, process.pid);
  } finally {
    loose.close();
  }
  assert.equal((await t.client.unary(m.info, {})).pid, process.pid);
  await assert.rejects(fs.stat(path.join(t.dataDir, "huge.bin")), { code: "ENOENT" });
  assert.deepEqual(await tempFilesIn(t.dataDir), []);
});

test("ReadFile of a 4 KiB file is fast over the socket", async (ctx) => {
  await fs.writeFile(path.join(t.dataDir, "small.txt"), "x".repeat(63).concat("\n").repeat(64));
  for (let i = 0; i < 50; i++) await t.client.unary(m.readFile, { path: "small.txt" });
  const times: number[] = [];
  for (let i = 0; i < 300; i++) {
    const start = process.hrtime.bigint();
    const r = await t.client.unary(m.readFile, { path: "small.txt" });
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
    assert.equal(r.totalLines, 64);
  }
  times.sort((a, b) => a - b);
  const p50 = times[Math.floor(times.length / 2)]!;
  ctx.diagnostic(`ReadFile 4 KiB: p50 ${p50.toFixed(3)} ms, p99 ${times[Math.floor(times.length * 0.99)]!.toFixed(3)} ms`);
  // The target is 1 ms (measured ≈ 0.6 ms idle); the bound leaves room for a loaded CI machine.
  assert.ok(p50 < 5, `p50 ${p50} ms`);
});

test("ReadFile reads procfs files, whose stat size is 0", async () => {
  const r = await t.client.unary(m.readFile, { path: "/proc/self/status" });
  assert.equal(r.binary, false);
  assert.match(r.content, new RegExp(`^Pid:\\s+${process.pid}$`, "m"));
  assert.equal(r.size, BigInt(Buffer.byteLength(r.content)));
});
