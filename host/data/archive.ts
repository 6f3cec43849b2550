// The workspace data archive: /data as a gzip-compressed tar (tar-stream + zlib), written
// and read as streams (never the whole archive in memory).
//
// Writing: regular files, directories and symlinks (as symlinks) with their permission
// bits, numeric owner (uid/gid) and mtimes (seconds, the tar header's precision). A file
// with more hard links than one is archived whole at its first name and as a hardlink
// entry to that name at every other, so a restore links them again. A file's size is the size of
// the open file at the moment it was opened (fstat of the fd, or the first ReadRaw chunk
// over the bridge); exactly that many bytes are archived, so a file that grows while it
// is read is archived consistently (a file that shrinks is padded with zeros). FIFOs,
// sockets and devices are not data: they are left out and reported in `skipped`.
//
// Every name is archived whatever its bytes and length: a PAX extended header carries a
// path of any length (`path`, `linkpath`), and a name or link target that is not valid
// UTF-8 (PAX values are UTF-8) has its exact bytes in `MEMOH.rawpath` / `MEMOH.rawlinkpath`
// (base64) beside a lossy UTF-8 `path` / `linkpath` for other tools, which still read the
// archive as a normal tar.gz. archive-read.ts restores the exact bytes.
//
// Reading (extract, verify) is in archive-read.ts.
//
// One file over 400 lines: the writer and the two tree sources it is fed from here (the
// host tree, and ListDir + ReadRaw through older agents) share the entry encoding and the
// skipped/lost bookkeeping, which a split would spread over modules that change together.
import { createHash } from "node:crypto";
import fs from "node:fs";
import { Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import type { BridgeClient } from "../bridge/client.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { binaryOf, child, lossyName, openForChildren, shortName, utf8OrUndefined } from "./raw-names.js";

/** PAX keys holding a name's or link target's exact bytes (base64) when they are not UTF-8. */
export const RAW_PATH_KEY = "MEMOH.rawpath";
export const RAW_LINKPATH_KEY = "MEMOH.rawlinkpath";

/** A name as given to the writer: text, or the exact bytes. */
export type EntryName = string | Uint8Array;

/** Numeric owner of an entry (root when not given). */
export interface Owner {
  uid: number;
  gid: number;
}

const ROOT: Owner = { uid: 0, gid: 0 };

/** The largest id the ustar header's 6 octal digits hold; larger ids go in PAX `uid` / `gid`. */
const USTAR_MAX_ID = 0o777777;

/** The header fields of an owner; `pax` is the entry's PAX record so far (names' raw bytes). */
function ownerFields(owner: Owner, pax: Record<string, string> | undefined): { uid: number; gid: number; pax?: Record<string, string> } {
  const big: Record<string, string> = {};
  if (owner.uid > USTAR_MAX_ID) big.uid = String(owner.uid);
  if (owner.gid > USTAR_MAX_ID) big.gid = String(owner.gid);
  const merged = Object.keys(big).length > 0 ? { ...pax, ...big } : pax;
  return { uid: Math.min(owner.uid, USTAR_MAX_ID), gid: Math.min(owner.gid, USTAR_MAX_ID), ...(merged ? { pax: merged } : {}) };
}

/** The tar header fields of a name (and link target): text as it is, other bytes in PAX records. */
export function nameFields(name: EntryName, linkTarget?: EntryName): { name: string; linkname?: string; pax?: Record<string, string> } {
  const pax: Record<string, string> = {};
  const text = (v: EntryName, key: string): string => {
    if (typeof v === "string") return v;
    const t = utf8OrUndefined(v);
    if (t !== undefined) return t;
    pax[key] = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
    return lossyName(v);
  };
  const out: { name: string; linkname?: string; pax?: Record<string, string> } = { name: text(name, RAW_PATH_KEY) };
  if (linkTarget !== undefined) out.linkname = text(linkTarget, RAW_LINKPATH_KEY);
  if (Object.keys(pax).length > 0) out.pax = pax;
  return out;
}

function displayName(name: EntryName): string {
  return typeof name === "string" ? name : shortName(name);
}

export interface ArchiveProgress {
  /** Content bytes of regular files so far. */
  bytes: number;
  /** Entries (files, directories, links) so far. */
  files: number;
}

export interface ArchiveLimits {
  /** Most content bytes (sum of the entries' sizes) an archive may hold. */
  maxBytes: number;
  /** Most entries an archive may hold. */
  maxEntries: number;
  /** Longest entry path in bytes (default archive-read.ts DEFAULT_MAX_PATH_BYTES). */
  maxPathBytes?: number;
}

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = { maxBytes: 16 * 1024 ** 3, maxEntries: 1_000_000 };

export interface PackResult extends ArchiveProgress {
  /** Entries left out that are not data (FIFOs, sockets, devices), or files cut short while read, with why. */
  skipped: string[];
  /**
   * Data (files, directories, symlinks) that could not be archived, with why: an archive
   * with any is not a complete copy of the tree, and a backup refuses it.
   */
  lost: string[];
}

const READ_BLOCK = 1024 * 1024;

/** Calls `fn` at most every `ms` (and once more at the end through flush()). */
export function throttle(fn: ((p: ArchiveProgress) => void) | undefined, ms = 250): { update(p: ArchiveProgress): void; flush(): void } {
  let last = 0;
  let latest: ArchiveProgress | undefined;
  const call = (p: ArchiveProgress) => {
    try {
      fn?.({ ...p });
    } catch {
      // a listener that went away
    }
  };
  return {
    update(p) {
      latest = p;
      if (Date.now() - last >= ms) {
        last = Date.now();
        call(p);
      }
    },
    flush() {
      if (latest) call(latest);
    },
  };
}

const GZIP_BLOCK = 1024 * 1024;

/** Gathers small buffers into blocks of about `size` bytes (a buffer at least that large passes as it is). */
function coalesce(size: number): Transform {
  let parts: Buffer[] = [];
  let held = 0;
  const flush = (t: Transform) => {
    if (held === 0) return;
    t.push(parts.length === 1 ? parts[0] : Buffer.concat(parts, held));
    parts = [];
    held = 0;
  };
  return new Transform({
    highWaterMark: size,
    transform(chunk: Buffer, _enc, cb) {
      if (chunk.byteLength >= size) {
        flush(this);
        this.push(chunk);
      } else {
        parts.push(chunk);
        held += chunk.byteLength;
        if (held >= size) flush(this);
      }
      cb();
    },
    flush(cb) {
      flush(this);
      cb();
    },
  });
}

/** A tar.gz being written to `out`: add entries, then finish(). */
export class ArchiveWriter {
  readonly progress: ArchiveProgress = { bytes: 0, files: 0 };
  readonly skipped: string[] = [];
  readonly lost: string[] = [];
  private readonly pack = tar.pack();
  private readonly done: Promise<void>;
  private failure: unknown;
  private readonly report: ReturnType<typeof throttle>;

  constructor(out: Writable, opts: { onProgress?: (p: ArchiveProgress) => void; level?: number } = {}) {
    this.report = throttle(opts.onProgress);
    // tar-stream emits each header, each chunk and each padding as its own buffer: they are
    // gathered into blocks of GZIP_BLOCK bytes, so gzip (in the thread pool) takes a few
    // hundred large writes instead of three small ones per file.
    this.done = pipeline(this.pack, coalesce(GZIP_BLOCK), zlib.createGzip({ level: opts.level ?? 6, chunkSize: GZIP_BLOCK }), out);
    this.done.catch((err: unknown) => (this.failure ??= err));
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private count(bytes: number): void {
    this.progress.files++;
    this.progress.bytes += bytes;
    this.report.update(this.progress);
  }

  async directory(name: EntryName, mode: number, mtimeMs: number, owner: Owner = ROOT): Promise<void> {
    this.check();
    const f = nameFields(name);
    await this.entry({ ...f, name: f.name.endsWith("/") ? f.name : `${f.name}/`, type: "directory", mode: mode & 0o7777, mtime: new Date(mtimeMs), size: 0, ...ownerFields(owner, f.pax) });
    this.count(0);
  }

  async symlink(name: EntryName, target: EntryName, mtimeMs: number, owner: Owner = ROOT): Promise<void> {
    this.check();
    const f = nameFields(name, target);
    await this.entry({ ...f, type: "symlink", mode: 0o777, mtime: new Date(mtimeMs), size: 0, ...ownerFields(owner, f.pax) });
    this.count(0);
  }

  /** Another name of a file archived earlier as `target` (a hard link: no bytes of its own). */
  async hardlink(name: EntryName, target: EntryName, mode: number, mtimeMs: number, owner: Owner = ROOT): Promise<void> {
    this.check();
    const f = nameFields(name, target);
    await this.entry({ ...f, type: "link", mode: mode & 0o7777, mtime: new Date(mtimeMs), size: 0, ...ownerFields(owner, f.pax) });
    this.count(0);
  }

  /** Records data that could not be archived (see PackResult.lost). */
  lose(name: EntryName, why: string): void {
    this.lost.push(`${displayName(name)}: ${why}`);
  }

  /** Records an entry left out that is not data, or a file cut short (see PackResult.skipped). */
  skip(name: EntryName, why: string): void {
    this.skipped.push(`${displayName(name)}: ${why}`);
  }

  /** A regular file of exactly `size` bytes from `chunks` (cut at size; zero-padded when short). */
  async file(name: EntryName, mode: number, mtimeMs: number, size: number, chunks: AsyncIterable<Uint8Array>, owner: Owner = ROOT): Promise<void> {
    this.check();
    const f = nameFields(name);
    const sink = this.pack.entry({ ...f, type: "file", mode: mode & 0o7777, mtime: new Date(mtimeMs), size, ...ownerFields(owner, f.pax) });
    const finished = new Promise<void>((resolve, reject) => {
      sink.on("finish", resolve);
      sink.on("error", reject);
      sink.on("close", resolve);
    });
    finished.catch(() => undefined);
    let written = 0;
    const write = async (buf: Uint8Array) => {
      if (!sink.write(buf)) {
        await new Promise<void>((resolve, reject) => {
          const onDrain = () => {
            sink.off("error", onError);
            resolve();
          };
          const onError = (e: unknown) => {
            sink.off("drain", onDrain);
            reject(e);
          };
          sink.once("drain", onDrain);
          sink.once("error", onError);
        });
      }
      this.check();
    };
    for await (const chunk of chunks) {
      const room = size - written;
      if (room <= 0) break;
      const part = chunk.byteLength > room ? chunk.subarray(0, room) : chunk;
      await write(part);
      written += part.byteLength;
      this.progress.bytes += part.byteLength;
      this.report.update(this.progress);
    }
    // The file shrank while it was read: the header promised `size` bytes.
    while (written < size) {
      const n = Math.min(READ_BLOCK, size - written);
      await write(Buffer.alloc(n));
      written += n;
    }
    (sink as unknown as { end(): void }).end();
    await finished;
    this.check();
    this.count(0);
  }

  private entry(header: Partial<tar.Header> & { name: string; pax?: Record<string, string> }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Ends the archive and waits until all of it reached `out`. */
  async finish(): Promise<PackResult> {
    this.check();
    this.pack.finalize();
    await this.done;
    this.report.flush();
    return { ...this.progress, skipped: this.skipped, lost: this.lost };
  }

  /** Stops writing (the output is left incomplete). */
  abort(err: unknown): void {
    this.failure ??= err;
    this.pack.destroy(err instanceof Error ? err : new Error(String(err)));
  }
}

// ------------------------------------------------------------------ sources

/** Reads `size` bytes of an open file from offset 0 (fewer when it shrank). */
async function* readFd(fh: fs.promises.FileHandle, size: number): AsyncGenerator<Uint8Array> {
  let pos = 0;
  while (pos < size) {
    const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, size - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.byteLength, pos);
    if (bytesRead === 0) return;
    pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

/**
 * Archives the tree under the host directory `root` (never following a link; a file's
 * size is fstat's of the opened fd). `exclude` names top-level entries to leave out.
 * Names are read and archived as bytes, and a directory deeper than one system call can
 * name is walked from an fd of it (raw-names.ts), so no name or depth is left out.
 * Owners are archived as numbers; a file with several hard links is archived once, and
 * its other names as hardlink entries to the first.
 */
export async function packHostTree(root: string, writer: ArchiveWriter, opts: { exclude?: ReadonlySet<string> } = {}): Promise<void> {
  const excluded = new Set([...(opts.exclude ?? [])].map((n) => binaryOf(Buffer.from(n))));
  const slash = Buffer.from("/");
  // The first archived name of each file with more than one link, by device and inode.
  const linked = new Map<string, Buffer>();
  const walk = async (dirPath: Buffer, rel: Buffer | undefined): Promise<void> => {
    const dir = openForChildren(dirPath);
    try {
      const names = (await fs.promises.readdir(dir.path, { encoding: "buffer" })).sort(Buffer.compare);
      for (const name of names) {
        if (rel === undefined && excluded.has(binaryOf(name))) continue;
        const abs = child(dir.path, name);
        const relName = rel === undefined ? name : Buffer.concat([rel, slash, name]);
        let st: fs.Stats;
        try {
          st = await fs.promises.lstat(abs);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") {
            writer.lose(relName, "gone while it was archived");
            continue;
          }
          throw err;
        }
        const owner = { uid: st.uid, gid: st.gid };
        if (st.isDirectory()) {
          await writer.directory(relName, st.mode, st.mtimeMs, owner);
          await walk(abs, relName);
        } else if (st.isSymbolicLink()) {
          await writer.symlink(relName, await fs.promises.readlink(abs, { encoding: "buffer" }), st.mtimeMs, owner);
        } else if (st.isFile()) {
          let fh: fs.promises.FileHandle;
          try {
            fh = await fs.promises.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === "ENOENT") {
              writer.lose(relName, "gone while it was archived");
              continue;
            }
            throw err;
          }
          try {
            const fst = await fh.stat();
            if (!fst.isFile()) {
              writer.lose(relName, "no longer a regular file when it was opened");
              continue;
            }
            const fowner = { uid: fst.uid, gid: fst.gid };
            // Inode numbers can pass 2^53 (overlayfs with xino): the key is built from bigints.
            const big = fst.nlink > 1 ? await fh.stat({ bigint: true }) : undefined;
            const inode = big === undefined ? undefined : `${big.dev}:${big.ino}`;
            const first = inode === undefined ? undefined : linked.get(inode);
            if (first !== undefined) {
              await writer.hardlink(relName, first, fst.mode, fst.mtimeMs, fowner);
              continue;
            }
            await writer.file(relName, fst.mode, fst.mtimeMs, fst.size, readFd(fh, fst.size), fowner);
            if (inode !== undefined) linked.set(inode, relName);
          } finally {
            await fh.close();
          }
        } else {
          writer.skip(relName, `${kindOf(st)} (not archived)`);
        }
      }
    } finally {
      dir.release();
    }
  };
  await walk(Buffer.from(root), undefined);
}

function kindOf(st: fs.Stats): string {
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "a special file";
}

/**
 * Archives the workspace's `dir` (default /data) through its agent: a recursive ListDir
 * (paged, sorted), ReadRaw of each file to the size the agent's fstat of the open fd
 * reported in its first chunk.
 */
export async function packBridgeTree(client: BridgeClient, writer: ArchiveWriter, opts: { dir?: string; signal?: AbortSignal; lookahead?: number } = {}): Promise<void> {
  const dir = (opts.dir ?? "/data").replace(/\/+$/, "") || "/";
  let offset = 0;
  const longDeadline = { timeoutMs: 24 * 3600_000, ...(opts.signal ? { signal: opts.signal } : {}) };
  type Opened = { ok: true; it: AsyncIterator<Uint8Array>; first: IteratorResult<Uint8Array>; size: number | undefined } | { ok: false; error: unknown };
  /** Starts the ReadRaw of a file and waits for its first chunk (which carries the size). */
  const open = (p: string | Uint8Array): Promise<Opened> => {
    let size: number | undefined;
    const it = client.readRaw(p, { onFileSize: (n) => (size = n) }, longDeadline)[Symbol.asyncIterator]();
    return it.next().then(
      (first) => ({ ok: true as const, it, first, size }),
      (error: unknown) => ({ ok: false as const, error }),
    );
  };
  // The next files' reads are opened ahead (their first chunks arrive while earlier files
  // are archived): one round trip per file is what dominated an export of many small files.
  const LOOKAHEAD = opts.lookahead ?? 32;
  const pending = new Map<number, Promise<Opened>>();
  const release = async () => {
    for (const p of pending.values()) {
      const o = await p;
      if (o.ok) await o.it.return?.(undefined).catch(() => undefined);
    }
    pending.clear();
  };
  try {
    for (;;) {
      const page = await client.listDir({ path: dir, recursive: true, offset, limit: 5000 }, { timeoutMs: 300_000 });
      const entries = page.entries;
      const prefix = Buffer.from(dir === "/" ? "/" : `${dir}/`);
      // A name that is not UTF-8 comes as bytes (pathBytes, symlinkTargetBytes): archived and read by its bytes.
      const nameOf = (e: (typeof entries)[number]): EntryName => (e.pathBytes.byteLength > 0 ? e.pathBytes : e.path);
      const absOf = (e: (typeof entries)[number]): string | Uint8Array => (e.pathBytes.byteLength > 0 ? Buffer.concat([prefix, e.pathBytes]) : `${dir}/${e.path}`);
      const prefetch = (from: number) => {
        for (let j = from, n = 0; j < entries.length && n < LOOKAHEAD; j++) {
          const e = entries[j]!;
          if (e.type !== FileType.FILE || e.pathTooLong) continue;
          n++;
          if (!pending.has(j)) pending.set(j, open(absOf(e)));
        }
      };
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        if (e.pathTooLong) {
          // No call of an agent without ReadTree can name it (ReadTree reaches it through fds).
          writer.lose(nameOf(e), "path longer than PATH_MAX, which this agent cannot read (not archived)");
          continue;
        }
        const mtimeMs = Number(e.mtimeMs);
        switch (e.type) {
          case FileType.DIRECTORY:
            await writer.directory(nameOf(e), e.mode, mtimeMs);
            break;
          case FileType.SYMLINK:
            await writer.symlink(nameOf(e), e.symlinkTargetBytes.byteLength > 0 ? e.symlinkTargetBytes : e.symlinkTarget, mtimeMs);
            break;
          case FileType.FILE: {
            prefetch(i);
            const o = await pending.get(i)!;
            pending.delete(i);
            if (!o.ok) {
              // Removed (or replaced by something else) since it was listed.
              const msg = describeError(o.error);
              if (/NOT_FOUND|no such file|not a regular file|FAILED_PRECONDITION/i.test(msg)) {
                writer.lose(nameOf(e), msg);
                continue;
              }
              throw o.error;
            }
            if (o.size === undefined) throw new WorkspaceError("internal", `the agent sent no size for ${e.path}`);
            const { it, first } = o;
            async function* rest(): AsyncGenerator<Uint8Array> {
              try {
                if (!first.done) yield first.value;
                for (;;) {
                  const r = await it.next();
                  if (r.done) return;
                  yield r.value;
                }
              } finally {
                await it.return?.(undefined);
              }
            }
            await writer.file(nameOf(e), e.mode, mtimeMs, o.size, rest());
            break;
          }
          default:
            writer.skip(nameOf(e), "a FIFO, socket or device (not archived)");
        }
      }
      await release();
      if (!page.hasMore) break;
      offset = page.nextOffset;
    }
  } finally {
    await release();
  }
}

/** A Transform that hashes what passes through (sha256) and counts it. */
export function hashingStream(): Transform & { digest(): { sha256: string; bytes: number } } {
  const hash = createHash("sha256");
  let bytes = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      cb(null, chunk);
    },
  }) as Transform & { digest(): { sha256: string; bytes: number } };
  t.digest = () => ({ sha256: hash.digest("hex"), bytes });
  return t;
}
