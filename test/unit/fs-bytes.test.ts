// File names are bytes: names that are not UTF-8 and 255-byte names of
// multi-byte characters, through every file RPC of a real in-process agent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { ContainerService, FileType, ReadFileResponseSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { tempPathFor } from "../../agent/fs/atomic.js";
import { READ_FILE_MAX_BYTES } from "../../agent/limits.js";
import { moveAcrossDevices } from "../../agent/fs/rename.js";
import { FsPath } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { readRawAll, rejectsWith, tempFilesIn } from "./helpers/fs.js";

const m = ContainerService.method;
const enc = (s: string) => new TextEncoder().encode(s);
let t: TestAgent;
/** An absolute path as bytes: the data dir, then `rel` (a Buffer or latin1 text). */
const at = (rel: Buffer | string) => Buffer.concat([Buffer.from(t.dataDir + "/"), typeof rel === "string" ? Buffer.from(rel, "latin1") : rel]);
const b = (latin1: string) => Buffer.from(latin1, "latin1");

/** "café" in Latin-1: byte 0xe9 alone is not UTF-8. */
const CAFE = b("caf\xe9");
/** A directory name of two bytes that are never UTF-8. */
const FFFE = b("\xff\xfe");

before(async () => {
  t = await startTestAgent();
  await fs.mkdir(at("names"));
  await fs.writeFile(at(Buffer.concat([b("names/"), CAFE])), "latin-1 name\n");
  await fs.writeFile(at("names/plain.txt"), "plain\n");
  await fs.mkdir(at(Buffer.concat([b("names/"), FFFE])));
  await fs.writeFile(at(Buffer.concat([b("names/"), FFFE, b("/inner")])), "inside\n");
  await fs.symlink(Buffer.concat([b("../"), CAFE]), at(Buffer.concat([b("names/"), FFFE, b("/link")])));
});
after(async () => {
  await t.close();
});

test("ListDir lists names that are not UTF-8 with their bytes and a lossy text; total counts exactly what is returned", async () => {
  const res = await t.client.unary(m.listDir, { path: "names" });
  assert.equal(res.total, 3);
  assert.equal(res.entries.length, 3, "no entry is dropped");
  assert.equal(res.sorted, true);
  // Byte order: "c" (0x63) < "p" (0x70) < 0xff.
  assert.deepEqual(res.entries.map((e) => Buffer.from(e.nameBytes.byteLength ? e.nameBytes : enc(e.name)).toString("latin1")), [
    "caf\xe9",
    "plain.txt",
    "\xff\xfe",
  ]);
  const [cafe, plain, dir] = res.entries;
  assert.deepEqual(Buffer.from(cafe!.nameBytes), CAFE);
  assert.deepEqual(Buffer.from(cafe!.pathBytes), CAFE);
  assert.equal(cafe!.name, "caf\uFFFD", "the text field holds the lossy display form");
  assert.equal(cafe!.type, FileType.FILE);
  assert.equal(cafe!.size, 13n);
  assert.deepEqual([plain!.name, plain!.nameBytes.byteLength, plain!.pathBytes.byteLength], ["plain.txt", 0, 0], "UTF-8 names carry no bytes");
  assert.equal(dir!.type, FileType.DIRECTORY);
  assert.deepEqual(Buffer.from(dir!.nameBytes), FFFE);

  const deep = await t.client.unary(m.listDir, { path: "names", recursive: true });
  assert.equal(deep.total, 5);
  assert.equal(deep.entries.length, 5);
  const link = deep.entries.find((e) => e.type === FileType.SYMLINK)!;
  assert.deepEqual(Buffer.from(link.pathBytes), Buffer.concat([FFFE, b("/link")]));
  assert.equal(link.name, "link");
  assert.deepEqual(Buffer.from(link.symlinkTargetBytes), Buffer.concat([b("../"), CAFE]));
  assert.equal(link.symlinkTarget, "../caf\uFFFD");
});

test("every path-taking RPC addresses a name that is not UTF-8 through path_bytes", async () => {
  const cafe = at(Buffer.concat([b("names/"), CAFE]));
  const st = await t.client.unary(m.stat, { pathBytes: cafe });
  assert.deepEqual(Buffer.from(st.info!.pathBytes), cafe);
  assert.deepEqual(Buffer.from(st.info!.nameBytes), CAFE);
  assert.equal(st.info!.size, 13n);

  // Relative bytes resolve against the data dir too.
  const read = await t.client.unary(m.readFile, { pathBytes: Buffer.concat([b("names/"), CAFE]) });
  assert.equal(read.content, "latin-1 name\n");
  const raw = await readRawAll(t.client, { pathBytes: Buffer.concat([b("names/"), FFFE, b("/inner")]) });
  assert.equal(raw.data.toString(), "inside\n");

  const written = Buffer.concat([b("made/"), FFFE, b("/new-"), CAFE]);
  await t.client.unary(m.writeFile, { pathBytes: written, content: enc("written") });
  assert.equal(await fs.readFile(at(written), "utf8"), "written");

  const { call, response } = t.client.clientStream(m.writeRaw);
  const streamed = Buffer.concat([b("made/raw-"), CAFE]);
  call.write({ msg: { case: "start", value: { pathBytes: streamed } } });
  call.write({ msg: { case: "chunk", value: { data: enc("streamed"), offset: 0n } } });
  call.end();
  assert.equal((await response).bytesWritten, 8n);
  assert.equal(await fs.readFile(at(streamed), "utf8"), "streamed");

  await t.client.unary(m.mkdir, { pathBytes: Buffer.concat([b("made/dir-"), FFFE]), parents: true });
  assert.ok((await fs.stat(at(Buffer.concat([b("made/dir-"), FFFE])))).isDirectory());

  await t.client.unary(m.rename, { fromBytes: streamed, toBytes: Buffer.concat([b("made/dir-"), FFFE, b("/moved-"), CAFE]) });
  assert.equal(await fs.readFile(at(Buffer.concat([b("made/dir-"), FFFE, b("/moved-"), CAFE])), "utf8"), "streamed");
  await assert.rejects(fs.stat(at(streamed)), { code: "ENOENT" });
  // Text on one side, bytes on the other.
  await t.client.unary(m.rename, { fromBytes: at(written), to: "made/renamed-as-text" });
  assert.equal(await fs.readFile(at("made/renamed-as-text"), "utf8"), "written");

  await t.client.unary(m.deleteFile, { pathBytes: Buffer.concat([b("made/dir-"), FFFE]), recursive: true });
  await assert.rejects(fs.stat(at(Buffer.concat([b("made/dir-"), FFFE]))), { code: "ENOENT" });
});

test("path and path_bytes: exactly one is set; NUL is refused in bytes too; errors show bytes as \\xNN", async () => {
  await rejectsWith(t.client.unary(m.stat, { path: "names", pathBytes: enc("names") }), Status.INVALID_ARGUMENT, /set path or path_bytes, not both/);
  await rejectsWith(t.client.unary(m.rename, { from: "a", fromBytes: enc("a"), to: "b" }), Status.INVALID_ARGUMENT, /set from or from_bytes, not both/);
  await rejectsWith(t.client.unary(m.stat, { pathBytes: b("a\x00b") }), Status.INVALID_ARGUMENT, /path_bytes contains a NUL byte/);
  await rejectsWith(t.client.unary(m.stat, {}), Status.INVALID_ARGUMENT, /path is empty/);
  const err = await rejectsWith(t.client.unary(m.stat, { pathBytes: b("names/missing-\xff") }), Status.NOT_FOUND);
  assert.ok(err.message.includes("names/missing-\\xff"), err.message);
});

test("a directory holding names that are not UTF-8 moves across file systems", async () => {
  const shm = await fs.mkdtemp("/dev/shm/memoh-bytes-");
  try {
    const src = Buffer.concat([Buffer.from(shm + "/tree-"), FFFE]);
    await fs.mkdir(Buffer.concat([src, b("/sub")]), { recursive: true });
    await fs.writeFile(Buffer.concat([src, b("/sub/"), CAFE]), "across");
    await t.client.unary(m.rename, { fromBytes: src, to: "moved-tree" });
    assert.equal(await fs.readFile(at(Buffer.concat([b("moved-tree/sub/"), CAFE])), "utf8"), "across");
    await assert.rejects(fs.lstat(src), { code: "ENOENT" });
    assert.deepEqual(await tempFilesIn(t.dataDir), []);
  } finally {
    await fs.rm(shm, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- 255-byte names

/** 85 three-byte characters: 255 bytes, NAME_MAX exactly. */
const LONG_NAME = "€".repeat(85);

test("a 255-byte name of multi-byte characters can be written with WriteFile and WriteRaw", async () => {
  assert.equal(Buffer.byteLength(LONG_NAME), 255);
  await t.client.unary(m.writeFile, { path: `long/${LONG_NAME}`, content: enc("one") });
  assert.equal(await fs.readFile(path.join(t.dataDir, "long", LONG_NAME), "utf8"), "one");
  // Replacing it goes through a temp file too.
  await t.client.unary(m.writeFile, { path: `long/${LONG_NAME}`, content: enc("two") });
  assert.equal(await fs.readFile(path.join(t.dataDir, "long", LONG_NAME), "utf8"), "two");

  const { call, response } = t.client.clientStream(m.writeRaw);
  call.write({ msg: { case: "start", value: { path: `long/raw-${LONG_NAME.slice(4)}` } } });
  call.write({ msg: { case: "chunk", value: { data: enc("raw"), offset: 0n } } });
  call.end();
  await response;
  assert.equal(await fs.readFile(path.join(t.dataDir, "long", `raw-${LONG_NAME.slice(4)}`), "utf8"), "raw");

  // 255 bytes that are not UTF-8.
  const ff = Buffer.alloc(255, 0xff);
  await t.client.unary(m.writeFile, { pathBytes: Buffer.concat([b("long/"), ff]), content: enc("ff") });
  assert.equal(await fs.readFile(at(Buffer.concat([b("long/"), ff])), "utf8"), "ff");
  assert.deepEqual(await tempFilesIn(path.join(t.dataDir, "long")), []);
});

test("temp names are cut by bytes at a character boundary and fit NAME_MAX", () => {
  const temp = tempPathFor(FsPath.fromText(`/data/${LONG_NAME}`));
  assert.ok(temp.name.byteLength <= 255, `${temp.name.byteLength} bytes`);
  const text = temp.name.toString("utf8");
  assert.ok(!text.includes("\uFFFD"), "no character was cut in half");
  assert.match(text, /^\.€+\.memoh-tmp-[0-9a-f]{12}$/);
});

test("Rename onto a 255-byte name of multi-byte characters, across file systems too", async () => {
  await fs.writeFile(path.join(t.dataDir, "short.txt"), "moved");
  await t.client.unary(m.rename, { from: "short.txt", to: `renamed/${LONG_NAME}` });
  assert.equal(await fs.readFile(path.join(t.dataDir, "renamed", LONG_NAME), "utf8"), "moved");

  const shm = await fs.mkdtemp("/dev/shm/memoh-long-");
  try {
    await fs.writeFile(path.join(shm, "f"), "across");
    // The copy lands on a temp name derived from the target's name before it is renamed into place.
    await t.client.unary(m.rename, { from: path.join(shm, "f"), to: `renamed/x${LONG_NAME.slice(1)}` });
    assert.equal(await fs.readFile(path.join(t.dataDir, "renamed", `x${LONG_NAME.slice(1)}`), "utf8"), "across");
    await moveAcrossDevices(FsPath.fromText(path.join(t.dataDir, "renamed", LONG_NAME)), FsPath.fromText(path.join(shm, LONG_NAME)));
    assert.equal(await fs.readFile(path.join(shm, LONG_NAME), "utf8"), "moved");
    assert.deepEqual(await tempFilesIn(path.join(t.dataDir, "renamed")), []);
  } finally {
    await fs.rm(shm, { recursive: true, force: true });
  }
});

test("path limits are in bytes: a path of few characters but many bytes is refused, naming bytes", async () => {
  // 1400 characters, 4200 bytes: under 4096 characters, over 4096 bytes.
  const wide = `w/${"€".repeat(1400)}`;
  await rejectsWith(t.client.unary(m.stat, { path: wide }), Status.INVALID_ARGUMENT, /4202 bytes long, over the limit of 4096 bytes/);
  await rejectsWith(t.client.unary(m.writeFile, { path: wide, content: enc("x") }), Status.INVALID_ARGUMENT, /bytes/);
  // A path that resolves past PATH_MAX says so, and how to reach such a file.
  const deep = `${"d".repeat(200)}/`.repeat(20) + "d".repeat(60);
  await rejectsWith(t.client.unary(m.stat, { path: deep }), Status.INVALID_ARGUMENT, /over PATH_MAX \(4095 bytes\).*Rename an ancestor/);
});

test("ReadFile's limit holds for the reply as sent: a file at the limit of 4-byte characters comes back byte for byte", async () => {
  // Text is returned only when the whole file is UTF-8, cut at line ends: the
  // reply's content is exactly the file's bytes, so the file-size limit bounds the message.
  const line = `${"🦀".repeat(1023)}\n`; // 4093 bytes
  const body = Buffer.alloc(READ_FILE_MAX_BYTES, 0x0a);
  const whole = Buffer.from(line.repeat(Math.floor(READ_FILE_MAX_BYTES / Buffer.byteLength(line))));
  whole.copy(body);
  await fs.writeFile(path.join(t.dataDir, "crabs.txt"), body);
  const res = await t.client.unary(m.readFile, { path: "crabs.txt", lineLimit: 10_000_000 });
  assert.equal(res.binary, false);
  assert.equal(Buffer.byteLength(res.content), READ_FILE_MAX_BYTES);
  assert.ok(toBinary(ReadFileResponseSchema, res).byteLength <= READ_FILE_MAX_BYTES + 64);
  await fs.appendFile(path.join(t.dataDir, "crabs.txt"), "🦀");
  await rejectsWith(t.client.unary(m.readFile, { path: "crabs.txt" }), Status.RESOURCE_EXHAUSTED, /over ReadFile's limit.*use ReadRaw/);
});
