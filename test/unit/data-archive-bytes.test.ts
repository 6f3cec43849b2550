// The data archive with names as bytes: a name or symlink target that is not UTF-8 and a
// path longer than PATH_MAX pack and unpack exactly (bytes, modes, link targets), the
// archive stays a tar.gz GNU tar lists, the raw records are checked like any name, and a
// backup that left data out is refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import zlib from "node:zlib";
import tar from "tar-stream";
import { ArchiveWriter, nameFields, packHostTree, RAW_PATH_KEY } from "../../host/data/archive.js";
import { extractArchive, safeName, verifyArchiveFile } from "../../host/data/archive-read.js";
import { refuseIncomplete } from "../../host/data/preserve.js";
import { atPath, binaryOf, shownName } from "../../host/data/raw-names.js";
import { WorkspaceError } from "../../host/workspace/errors.js";

const run = promisify(execFile);
const b = (s: string) => Buffer.from(s, "latin1");
const DEEP_NAME = b("d".repeat(200));
const DEEP_LEVELS = 25; // 25 × 201 bytes: over PATH_MAX (4096) below any root

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "data-bytes-"));
}

/** Every entry under `root` by its bytes (hex of the relative path): type, mode, sha256 or link target as hex. */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string): Promise<void> => {
    const names = await atPath(root, rel, (p) => fs.readdirSync(p, { encoding: "buffer" }));
    for (const name of names) {
      const r = rel === "" ? binaryOf(name) : `${rel}/${binaryOf(name)}`;
      const key = b(r).toString("hex");
      await atPath(root, r, async (p) => {
        const st = fs.lstatSync(p);
        if (st.isSymbolicLink()) out[key] = `link ${fs.readlinkSync(p, { encoding: "buffer" }).toString("hex")}`;
        else if (st.isDirectory()) out[key] = `dir ${(st.mode & 0o7777).toString(8)}`;
        else out[key] = `file ${(st.mode & 0o7777).toString(8)} ${createHash("sha256").update(fs.readFileSync(p)).digest("hex")}`;
      });
      if (out[key]!.startsWith("dir")) await walk(r);
    }
  };
  await walk("");
  return out;
}

/** A tree with a latin1 file name, a symlink whose target is not UTF-8, and a file below a path longer than PATH_MAX. */
async function populate(root: string): Promise<void> {
  fs.writeFileSync(Buffer.concat([b(root), b("/caf\xe9.txt")]), "latin1 name\n", { mode: 0o640 });
  fs.mkdirSync(Buffer.concat([b(root), b("/dir\xff")]), { mode: 0o750 });
  fs.writeFileSync(Buffer.concat([b(root), b("/dir\xff/in\xfe.bin")]), Buffer.from([0, 1, 2, 255]), { mode: 0o600 });
  fs.symlinkSync(b("tar\xffget/\xe9"), Buffer.concat([b(root), b("/badlink")]));
  fs.symlinkSync("ok-target", Buffer.concat([b(root), b("/ok\xe9link")]));
  let rel = "";
  for (let i = 0; i < DEEP_LEVELS; i++) {
    rel = rel === "" ? binaryOf(DEEP_NAME) : `${rel}/${binaryOf(DEEP_NAME)}`;
    await atPath(root, rel, (p) => fs.mkdirSync(p, { mode: 0o755 }));
  }
  await atPath(root, `${rel}/deep\xe9.txt`, (p) => fs.writeFileSync(p, "deep\n", { mode: 0o604 }));
  await atPath(root, `${rel}/link`, (p) => fs.symlinkSync(b(`../${"x".repeat(250)}\xe9`), p));
}

async function pack(root: string, file: string) {
  const writer = new ArchiveWriter(fs.createWriteStream(file));
  await packHostTree(root, writer);
  return writer.finish();
}

test("names that are not UTF-8 and paths over PATH_MAX pack and unpack exactly (bytes, modes, link targets)", async () => {
  const src = tmp();
  await populate(src);
  const file = path.join(tmp(), "a.tar.gz");
  const packed = await pack(src, file);
  assert.deepEqual(packed.skipped, []);
  assert.deepEqual(packed.lost, []);
  assert.equal(packed.files, 7 + DEEP_LEVELS);
  const v = await verifyArchiveFile(file);
  assert.equal(v.entries, packed.files);

  const dest = tmp();
  const res = await extractArchive(fs.createReadStream(file), dest, { limits: { maxBytes: 1 << 30, maxEntries: 1000, maxPathBytes: Infinity } });
  assert.equal(res.entries, packed.files);
  const want = await describeTree(src);
  assert.equal(Object.keys(want).length, packed.files);
  assert.deepEqual(await describeTree(dest), want);
});

test("the archive stays a normal tar.gz: GNU tar lists every entry, with lossy names for those that are not UTF-8", async () => {
  const src = tmp();
  await populate(src);
  const file = path.join(tmp(), "a.tar.gz");
  const packed = await pack(src, file);
  const { stdout } = await run("tar", ["-tzf", file], { maxBuffer: 64 << 20, encoding: "buffer" });
  const listed = stdout.toString("utf8").split("\n").filter((l) => l !== "");
  assert.equal(listed.length, packed.files);
  assert.ok(listed.includes("caf\ufffd.txt"), listed.slice(0, 5).join(" | "));
  assert.ok(listed.some((l) => Buffer.byteLength(l) > 4096), "the deep path is listed whole");
});

test("raw records are checked like names: absolute, .., NUL, over-long components and malformed base64 are refused", async () => {
  const archive = async (pax: Record<string, string>) => {
    const p = tar.pack();
    p.entry({ name: "fallback.txt", type: "file", pax }, Buffer.from("x"));
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p.pipe(zlib.createGzip())) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };
  const cases: Array<[Buffer | string, RegExp]> = [
    [b("/etc/\xe9vil"), /absolute path/],
    [b("a/../../\xe9"), /climbs out/],
    [b("a\0\xe9"), /NUL/],
    [b(`${"n".repeat(256)}\xe9`), /at most 255/],
    ["@@not base64", /malformed/],
  ];
  for (const [raw, pattern] of cases) {
    const value = typeof raw === "string" ? raw : raw.toString("base64");
    const dest = tmp();
    await assert.rejects(extractArchive(Readable.from([await archive({ [RAW_PATH_KEY]: value })]), dest), (err: unknown) => {
      assert.ok(err instanceof WorkspaceError, String(err));
      assert.match(err.message, pattern);
      return true;
    });
    assert.deepEqual(fs.readdirSync(dest), []);
  }
  // An ordinary archive from another tool: names as before.
  assert.equal(safeName(Buffer.from("./a/b/ü.txt")), b(Buffer.from("a/b/ü.txt").toString("latin1")).toString("latin1"));
  assert.throws(() => safeName(Buffer.from("x/".repeat(35_000))), /too long/);
});

test("header fields: UTF-8 names stay plain; other bytes get a raw record and a lossy path", () => {
  assert.deepEqual(nameFields("a/ü"), { name: "a/ü" });
  assert.deepEqual(nameFields(Buffer.from("a/ü")), { name: "a/ü" });
  const f = nameFields(b("caf\xe9"), b("t\xff"));
  assert.equal(f.name, "caf\ufffd");
  assert.equal(f.linkname, "t\ufffd");
  assert.deepEqual(f.pax, { "MEMOH.rawpath": b("caf\xe9").toString("base64"), "MEMOH.rawlinkpath": b("t\xff").toString("base64") });
  assert.equal(shownName(Buffer.concat([b("caf\xe9 "), Buffer.from("ü")])), "caf\\xe9 ü");
});

test("a backup that left data out is refused (conflict), naming the first entries", () => {
  refuseIncomplete("bot", []);
  assert.throws(
    () => refuseIncomplete("bot", ["a: gone", "b: gone", "c: gone", "d: gone", "e: gone", "f: gone", "g: gone"]),
    (err: unknown) => err instanceof WorkspaceError && err.code === "conflict" && /a: gone; b: gone/.test(err.message) && /and 2 more/.test(err.message) && /nothing was deleted/.test(err.message),
  );
});
