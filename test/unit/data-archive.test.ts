// The data archive on host directories: a tree packs and unpacks identically (bytes,
// symlinks, modes, mtimes, owners, hard links), a file that grows while it is read is archived to the size
// it had when opened, and every kind of malicious or broken archive is refused with a
// clear error and nothing written outside the staging directory.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import zlib from "node:zlib";
import tar from "tar-stream";
import { ArchiveWriter, packHostTree } from "../../host/data/archive.js";
import { extractArchive, verifyArchiveFile } from "../../host/data/archive-read.js";
import { WorkspaceError } from "../../host/workspace/errors.js";

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "data-archive-"));
}

/** Every entry under `root`: type, mode, mtime (s), sha256 or link target. */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string, rel: string) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const abs = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(abs);
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (st.isSymbolicLink()) out[r] = `link ${fs.readlinkSync(abs)} ${mtime}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${(st.mode & 0o7777).toString(8)} ${mtime}`;
        walk(abs, r);
      } else out[r] = `file ${(st.mode & 0o7777).toString(8)} ${mtime} ${createHash("sha256").update(fs.readFileSync(abs)).digest("hex")}`;
    }
  };
  walk(root, "");
  return out;
}

async function packToFile(root: string, file: string): Promise<void> {
  const writer = new ArchiveWriter(fs.createWriteStream(file));
  await packHostTree(root, writer);
  await writer.finish();
}

function buildArchive(entries: Array<{ header: Partial<tar.Header> & { name: string }; data?: Buffer }>, opts: { truncateAt?: number } = {}): Buffer {
  const pack = tar.pack();
  for (const e of entries) pack.entry(e.header, e.data ?? Buffer.alloc(0));
  pack.finalize();
  const chunks: Buffer[] = [];
  return new Promise<Buffer>((resolve, reject) => {
    const gz = zlib.createGzip();
    pack.pipe(gz as unknown as NodeJS.WritableStream);
    gz.on("data", (c: Buffer) => chunks.push(c));
    gz.on("end", () => {
      const all = Buffer.concat(chunks);
      resolve(opts.truncateAt !== undefined ? all.subarray(0, opts.truncateAt) : all);
    });
    gz.on("error", reject);
  }) as unknown as Buffer;
}

async function refused(archive: Buffer | Promise<Buffer>, pattern: RegExp, limits?: { maxBytes: number; maxEntries: number }): Promise<string> {
  const dest = tmp();
  const outside = tmp();
  await assert.rejects(
    extractArchive(Readable.from([await archive]), path.join(dest), limits ? { limits } : {}),
    (err: unknown) => {
      assert.ok(err instanceof WorkspaceError, `not a WorkspaceError: ${String(err)}`);
      assert.match(err.message, pattern);
      return true;
    },
  );
  assert.deepEqual(fs.readdirSync(outside), []);
  return dest;
}

test("a tree packs and unpacks identically: bytes, symlinks, modes, mtimes, empty dirs", async () => {
  const src = tmp();
  fs.mkdirSync(path.join(src, "a/b/c"), { recursive: true });
  fs.mkdirSync(path.join(src, "empty"), { mode: 0o750 });
  fs.writeFileSync(path.join(src, "a/b/c/deep.bin"), Buffer.from(Array.from({ length: 3_000_000 }, (_, i) => (i * 7) % 256)));
  fs.writeFileSync(path.join(src, "top.txt"), "hello\n", { mode: 0o640 });
  fs.writeFileSync(path.join(src, "exec.sh"), "#!/bin/sh\n", { mode: 0o755 });
  fs.writeFileSync(path.join(src, "zero"), "");
  fs.symlinkSync("a/b/c/deep.bin", path.join(src, "rel-link"));
  fs.symlinkSync("/etc/hostname", path.join(src, "abs-link"));
  fs.symlinkSync("missing", path.join(src, "dangling"));
  const long = "n".repeat(120);
  fs.writeFileSync(path.join(src, "a", long), "long name");
  const old = new Date("2020-01-02T03:04:05Z");
  fs.utimesSync(path.join(src, "top.txt"), old, old);
  fs.utimesSync(path.join(src, "empty"), old, old);
  fs.lutimesSync(path.join(src, "rel-link"), old, old);
  fs.chmodSync(path.join(src, "top.txt"), 0o640);

  const file = path.join(tmp(), "out.tar.gz");
  await packToFile(src, file);
  const verified = await verifyArchiveFile(file);
  assert.equal(verified.entries, Object.keys(describeTree(src)).length);
  const dest = tmp();
  const result = await extractArchive(fs.createReadStream(file), dest);
  assert.equal(result.entries, verified.entries);
  assert.deepEqual(describeTree(dest), describeTree(src));
});

test("owners (also ids past the ustar header's range) and hard links pack and unpack as they were", async () => {
  const src = tmp();
  fs.mkdirSync(path.join(src, "home"), { mode: 0o750 });
  fs.writeFileSync(path.join(src, "home/notes.txt"), "mine\n");
  fs.writeFileSync(path.join(src, "big-id"), "remapped\n");
  fs.symlinkSync("notes.txt", path.join(src, "home/link"));
  fs.writeFileSync(path.join(src, "a-first"), "shared bytes\n");
  fs.mkdirSync(path.join(src, "z"));
  fs.linkSync(path.join(src, "a-first"), path.join(src, "z/second"));
  fs.linkSync(path.join(src, "a-first"), path.join(src, "b-third"));
  fs.chownSync(path.join(src, "home"), 1000, 1001);
  fs.chownSync(path.join(src, "home/notes.txt"), 1000, 1001);
  fs.lchownSync(path.join(src, "home/link"), 1002, 1003);
  fs.chownSync(path.join(src, "big-id"), 300000, 4000000);
  fs.chownSync(path.join(src, "a-first"), 1000, 100);

  const file = path.join(tmp(), "out.tar.gz");
  await packToFile(src, file);
  // The archive itself: one copy of the shared bytes, two hardlink entries to its first name.
  const headers: tar.Header[] = [];
  const ex = tar.extract();
  ex.on("entry", (h, stream, next) => {
    headers.push(h);
    stream.on("end", next);
    stream.resume();
  });
  await new Promise<void>((resolve, reject) => {
    ex.on("finish", resolve);
    ex.on("error", reject);
    fs.createReadStream(file).pipe(zlib.createGunzip()).pipe(ex);
  });
  const byName = new Map(headers.map((h) => [h.name, h]));
  assert.equal(byName.get("a-first")?.type, "file");
  assert.equal(byName.get("a-first")?.size, 13);
  for (const other of ["b-third", "z/second"]) {
    assert.equal(byName.get(other)?.type, "link", other);
    assert.equal(byName.get(other)?.linkname, "a-first", other);
  }

  const dest = tmp();
  await extractArchive(fs.createReadStream(file), dest);
  const owner = (rel: string) => {
    const st = fs.lstatSync(path.join(dest, rel));
    return `${st.uid}:${st.gid}`;
  };
  assert.equal(owner("home"), "1000:1001");
  assert.equal(owner("home/notes.txt"), "1000:1001");
  assert.equal(owner("home/link"), "1002:1003");
  assert.equal(owner("big-id"), "300000:4000000");
  assert.equal(owner("a-first"), "1000:100");
  const first = fs.statSync(path.join(dest, "a-first"));
  assert.equal(first.nlink, 3);
  assert.equal(fs.statSync(path.join(dest, "z/second")).ino, first.ino);
  assert.equal(fs.statSync(path.join(dest, "b-third")).ino, first.ino);
  assert.equal(fs.readFileSync(path.join(dest, "b-third"), "utf8"), "shared bytes\n");
  assert.equal((fs.statSync(path.join(dest, "home")).mode & 0o7777).toString(8), "750");
});

test("an archive entry with an owner id that is not a number is refused", async () => {
  await refused(buildArchive([{ header: { name: "f", type: "file", pax: { uid: "12x" } }, data: Buffer.from("x") }]), /invalid uid "12x"/);
  await refused(buildArchive([{ header: { name: "f", type: "file", pax: { gid: "99999999999" } }, data: Buffer.from("x") }]), /invalid gid/);
});

test("a file that keeps growing while it is archived is cut at its size when opened; the archive is valid", async () => {
  const src = tmp();
  const grow = path.join(src, "grow.log");
  fs.writeFileSync(grow, Buffer.alloc(4 * 1024 * 1024, 1));
  const fd = fs.openSync(grow, "a");
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      fs.writeSync(fd, Buffer.alloc(256 * 1024, 2));
      await new Promise((r) => setImmediate(r));
    }
  })();
  const file = path.join(tmp(), "grow.tar.gz");
  try {
    await packToFile(src, file);
  } finally {
    stop = true;
    await writer;
    fs.closeSync(fd);
  }
  const v = await verifyArchiveFile(file);
  assert.equal(v.entries, 1);
  assert.ok(v.bytes >= 4 * 1024 * 1024);
  const dest = tmp();
  await extractArchive(fs.createReadStream(file), dest);
  const got = fs.readFileSync(path.join(dest, "grow.log"));
  assert.equal(got.byteLength, v.bytes);
  assert.deepEqual(got.subarray(0, 4 * 1024 * 1024), Buffer.alloc(4 * 1024 * 1024, 1));
});

test("malicious archives are refused with a clear error", async () => {
  const file = (name: string, data = "x") => ({ header: { name, type: "file" as const, size: Buffer.byteLength(data), mode: 0o644 }, data: Buffer.from(data) });
  await refused(buildArchive([file("../escape.txt")]), /climbs out with \.\./);
  await refused(buildArchive([file("ok/../../escape.txt")]), /climbs out/);
  await refused(buildArchive([file("/etc/evil")]), /absolute path/);
  const outside = tmp();
  const dest = await refused(
    buildArchive([{ header: { name: "link", type: "symlink", linkname: outside } }, file("link/planted.txt")]),
    /written through the symlink "link"/,
  );
  assert.deepEqual(fs.readdirSync(outside), [], "a file was written through the symlink");
  assert.ok(fs.lstatSync(path.join(dest, "link")).isSymbolicLink());
  await refused(buildArchive([{ header: { name: "hosts", type: "symlink", linkname: "/etc/hosts" } }, file("hosts", "pwned")]), /appears twice or clashes/);
  assert.notEqual(fs.readFileSync("/etc/hosts", "utf8"), "pwned");
  await refused(buildArchive([{ header: { name: "passwd", type: "link", linkname: "/etc/passwd" } }]), /hardlink "passwd" points outside/);
  await refused(buildArchive([{ header: { name: "passwd", type: "link", linkname: "etc/passwd" } }]), /not a file of this archive/);
  await refused(buildArchive([{ header: { name: "null", type: "character-device", devmajor: 1, devminor: 3 } }]), /device node/);
  await refused(buildArchive([{ header: { name: "disk", type: "block-device", devmajor: 8, devminor: 0 } }]), /device node/);
  await refused(buildArchive([{ header: { name: "pipe", type: "fifo" } }]), /FIFO/);
});

test("size and entry caps, gzip bombs, corrupt and truncated archives are refused", async () => {
  const limits = { maxBytes: 1024 * 1024, maxEntries: 10 };
  // 64 MiB of zeros in one entry: ~64 KiB compressed.
  await refused(buildArchive([{ header: { name: "bomb", type: "file", size: 64 * 1024 * 1024 }, data: Buffer.alloc(64 * 1024 * 1024) }]), /more than 1048576 bytes/, limits);
  // A bomb without headers: zeros only.
  await refused(zlib.gzipSync(Buffer.alloc(32 * 1024 * 1024)), /more than 1048576 bytes|corrupt|end of/, limits);
  await refused(buildArchive(Array.from({ length: 11 }, (_, i) => ({ header: { name: `f${i}`, type: "file" as const, size: 1 }, data: Buffer.from("x") }))), /more than 10 entries/, limits);
  await refused(Buffer.from("this is not gzip at all"), /not valid gzip/);
  const good = await buildArchive([{ header: { name: "big", type: "file", size: 200_000 }, data: Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 31) % 251)) }]);
  await refused(good.subarray(0, Math.floor(good.byteLength / 2)), /corrupt or truncated|not valid gzip|unexpected end/i);
  const corrupt = Buffer.from(good);
  corrupt[Math.floor(corrupt.byteLength / 2)]! ^= 0xff;
  await refused(corrupt, /not valid gzip|corrupt/);
  // And a good one passes through a slow stream.
  const dest = tmp();
  const slow = new PassThrough();
  const done = extractArchive(slow, dest);
  for (let i = 0; i < good.byteLength; i += 1000) {
    slow.write(good.subarray(i, i + 1000));
    await new Promise((r) => setImmediate(r));
  }
  slow.end();
  await done;
  assert.equal(fs.statSync(path.join(dest, "big")).size, 200_000);
});
