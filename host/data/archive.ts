// The workspace data archive: /data as a gzip-compressed tar (tar-stream + zlib), written
// and read as streams (never the whole archive in memory).
//
// Writing: regular files, directories and symlinks (as symlinks) with their permission
// bits and mtimes (seconds, the tar header's precision). A file's size is the size of
// the open file at the moment it was opened (fstat of the fd, or the first ReadRaw chunk
// over the bridge); exactly that many bytes are archived, so a file that grows while it
// is read is archived consistently (a file that shrinks is padded with zeros). FIFOs,
// sockets and devices are left out and reported.
//
// Reading (extract): into an empty staging directory, every entry checked before it is
// written: no absolute path, no `..`, nothing written through a symlink (every parent is
// a real directory of the staging tree; files are created with O_EXCL, which never
// follows a link), hardlinks only to a regular file already extracted from the same
// archive, no devices or FIFOs, at most `maxEntries` entries and `maxBytes` of content
// (the decompressed stream is counted too, so a gzip bomb stops early), and a corrupt or
// truncated gzip or tar is an error. The caller throws the staging tree away on error.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Readable, Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import type { BridgeClient } from "../bridge/client.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";

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
}

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = { maxBytes: 16 * 1024 ** 3, maxEntries: 1_000_000 };

export interface PackResult extends ArchiveProgress {
  /** Entries left out (FIFOs, sockets, devices, names that are not UTF-8), with why. */
  skipped: string[];
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

  async directory(name: string, mode: number, mtimeMs: number): Promise<void> {
    this.check();
    await this.entry({ name: name.endsWith("/") ? name : `${name}/`, type: "directory", mode: mode & 0o7777, mtime: new Date(mtimeMs), size: 0 });
    this.count(0);
  }

  async symlink(name: string, target: string, mtimeMs: number): Promise<void> {
    this.check();
    await this.entry({ name, type: "symlink", linkname: target, mode: 0o777, mtime: new Date(mtimeMs), size: 0 });
    this.count(0);
  }

  /** A regular file of exactly `size` bytes from `chunks` (cut at size; zero-padded when short). */
  async file(name: string, mode: number, mtimeMs: number, size: number, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    this.check();
    const sink = this.pack.entry({ name, type: "file", mode: mode & 0o7777, mtime: new Date(mtimeMs), size });
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

  private entry(header: Partial<tar.Header> & { name: string }): Promise<void> {
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
    return { ...this.progress, skipped: this.skipped };
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
 */
export async function packHostTree(root: string, writer: ArchiveWriter, opts: { exclude?: ReadonlySet<string> } = {}): Promise<void> {
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = (await fs.promises.readdir(dir)).sort();
    for (const name of names) {
      if (rel === "" && opts.exclude?.has(name)) continue;
      const abs = path.join(dir, name);
      const relName = rel === "" ? name : `${rel}/${name}`;
      let st: fs.Stats;
      try {
        st = await fs.promises.lstat(abs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw err;
      }
      if (st.isDirectory()) {
        await writer.directory(relName, st.mode, st.mtimeMs);
        await walk(abs, relName);
      } else if (st.isSymbolicLink()) {
        await writer.symlink(relName, await fs.promises.readlink(abs), st.mtimeMs);
      } else if (st.isFile()) {
        let fh: fs.promises.FileHandle;
        try {
          fh = await fs.promises.open(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
          throw err;
        }
        try {
          const fst = await fh.stat();
          if (!fst.isFile()) {
            writer.skipped.push(`${relName}: no longer a regular file`);
            continue;
          }
          await writer.file(relName, fst.mode, fst.mtimeMs, fst.size, readFd(fh, fst.size));
        } finally {
          await fh.close();
        }
      } else {
        writer.skipped.push(`${relName}: ${kindOf(st)} (not archived)`);
      }
    }
  };
  await walk(root, "");
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
  const open = (p: string): Promise<Opened> => {
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
      const archivable = (e: (typeof entries)[number]) => e.pathBytes.byteLength === 0 && e.nameBytes.byteLength === 0 && e.symlinkTargetBytes.byteLength === 0 && !e.pathTooLong;
      const prefetch = (from: number) => {
        for (let j = from, n = 0; j < entries.length && n < LOOKAHEAD; j++) {
          const e = entries[j]!;
          if (e.type !== FileType.FILE || !archivable(e)) continue;
          n++;
          if (!pending.has(j)) pending.set(j, open(`${dir}/${e.path}`));
        }
      };
      for (let i = 0; i < entries.length; i++) {
        const e = entries[i]!;
        if (!archivable(e)) {
          writer.skipped.push(`${e.path}: ${e.pathTooLong ? "path longer than PATH_MAX" : "its name or link target is not UTF-8"} (not archived)`);
          continue;
        }
        const mtimeMs = Number(e.mtimeMs);
        switch (e.type) {
          case FileType.DIRECTORY:
            await writer.directory(e.path, e.mode, mtimeMs);
            break;
          case FileType.SYMLINK:
            await writer.symlink(e.path, e.symlinkTarget, mtimeMs);
            break;
          case FileType.FILE: {
            prefetch(i);
            const o = await pending.get(i)!;
            pending.delete(i);
            if (!o.ok) {
              // Removed (or replaced by something else) since it was listed.
              const msg = describeError(o.error);
              if (/NOT_FOUND|no such file|not a regular file|FAILED_PRECONDITION/i.test(msg)) {
                writer.skipped.push(`${e.path}: ${msg}`);
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
            await writer.file(e.path, e.mode, mtimeMs, o.size, rest());
            break;
          }
          default:
            writer.skipped.push(`${e.path}: a FIFO, socket or device (not archived)`);
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

// ------------------------------------------------------------------ extract

/** Counts the decompressed bytes and stops the stream beyond `max`. */
function counter(max: number, onTooMuch: () => Error): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.byteLength;
      if (n > max) cb(onTooMuch());
      else cb(null, chunk);
    },
  });
}

/** The entry's name as a safe relative path ("" for the root itself), or why it is refused. */
export function safeName(raw: string): string {
  if (raw.includes("\0")) throw refuse(`entry name ${JSON.stringify(raw)} holds a NUL byte`);
  if (raw.startsWith("/")) throw refuse(`entry ${JSON.stringify(raw)} has an absolute path`);
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(`entry ${JSON.stringify(raw)} climbs out with ..`);
  const name = parts.join("/");
  if (Buffer.byteLength(name) > 4000) throw refuse(`entry name of ${Buffer.byteLength(name)} bytes is too long`);
  return name;
}

function refuse(message: string): WorkspaceError {
  return new WorkspaceError("invalid_argument", `the archive is refused: ${message}`);
}

export interface ExtractResult extends ArchiveProgress {
  entries: number;
}

/**
 * Extracts a tar.gz from `input` into `dest` (an empty directory), checking every entry
 * (see the top of this file); with `dest` undefined only checks (nothing is written).
 * The checks use a model of the tree the archive builds (the staging dir starts empty,
 * so the model is exact); the writes use O_EXCL / O_NOFOLLOW on top of it. Throws a
 * WorkspaceError (invalid_argument, payload_too_large) and leaves whatever was extracted
 * for the caller to remove. `input` is never destroyed: on a refusal the rest of it is
 * drained, so an HTTP request can still be answered.
 */
export async function extractArchive(
  input: Readable | AsyncIterable<Uint8Array>,
  dest: string | undefined,
  opts: { limits?: ArchiveLimits; onProgress?: (p: ArchiveProgress) => void } = {},
): Promise<ExtractResult> {
  const limits = opts.limits ?? DEFAULT_ARCHIVE_LIMITS;
  const report = throttle(opts.onProgress);
  const progress: ArchiveProgress = { bytes: 0, files: 0 };
  let entries = 0;
  let declared = 0;
  // What the archive has made so far: "" is the root.
  const model = new Map<string, "dir" | "file" | "symlink">([["", "dir"]]);
  const dirTimes: Array<{ abs: string; mode: number; mtime: Date }> = [];
  const extract = tar.extract();
  // Headers and padding on top of the content: 1.5 KiB per entry (pax headers) and 1 MiB slack.
  const maxStream = limits.maxBytes + limits.maxEntries * 1536 + 1024 * 1024;
  const tooLarge = () => new WorkspaceError("payload_too_large", `the archive is refused: it unpacks to more than ${limits.maxBytes} bytes`);
  const gunzip = zlib.createGunzip();
  const source = input as Readable;
  const ownSource = typeof source.pipe !== "function" ? Readable.from(input) : source;
  ownSource.pipe(gunzip);
  ownSource.once("error", (err) => gunzip.destroy(err));
  const feeding = pipeline(gunzip, counter(maxStream, tooLarge), extract);
  feeding.catch(() => undefined);

  const exists = (name: string, kind: string): never => {
    throw refuse(`entry ${JSON.stringify(name)} appears twice or clashes with an earlier ${kind}`);
  };
  /** Every ancestor must be a directory of the archive (made when not listed, like tar does), never a symlink. */
  const parentOk = async (name: string): Promise<void> => {
    const parts = name.split("/");
    let rel = "";
    for (const part of parts.slice(0, -1)) {
      rel = rel === "" ? part : `${rel}/${part}`;
      const kind = model.get(rel);
      if (kind === "dir") continue;
      if (kind === "symlink") throw refuse(`entry ${JSON.stringify(name)} would be written through the symlink ${JSON.stringify(rel)}`);
      if (kind === "file") throw refuse(`entry ${JSON.stringify(name)} needs ${JSON.stringify(rel)} to be a directory`);
      if (dest !== undefined) await fs.promises.mkdir(path.join(dest, rel), { mode: 0o755 });
      model.set(rel, "dir");
    }
  };

  try {
    for await (const entry of extract) {
      const h = entry.header;
      entries++;
      if (entries > limits.maxEntries) throw new WorkspaceError("payload_too_large", `the archive is refused: it holds more than ${limits.maxEntries} entries`);
      const name = safeName(h.name);
      const size = h.size ?? 0;
      declared += size;
      if (declared > limits.maxBytes) throw tooLarge();
      const mode = (h.mode ?? 0o644) & 0o1777; // no setuid/setgid bits
      const mtime = h.mtime ?? new Date();
      const abs = dest === undefined ? "" : path.join(dest, name);
      switch (h.type) {
        case "directory": {
          if (name !== "") {
            await parentOk(name);
            const kind = model.get(name);
            if (kind !== undefined && kind !== "dir") exists(name, kind);
            if (kind === undefined && dest !== undefined) await fs.promises.mkdir(abs, { mode: 0o700 });
            model.set(name, "dir");
          }
          if (dest !== undefined) dirTimes.push({ abs: name === "" ? dest : abs, mode, mtime });
          break;
        }
        case "file":
        case "contiguous-file": {
          if (name === "") throw refuse("a file entry names the root");
          await parentOk(name);
          const kind = model.get(name);
          if (kind !== undefined) exists(name, kind);
          model.set(name, "file");
          let written = 0;
          if (dest === undefined) {
            for await (const chunk of entry) {
              written += (chunk as Buffer).byteLength;
              progress.bytes += (chunk as Buffer).byteLength;
            }
          } else {
            // O_EXCL: an existing name (a symlink included) is refused, never followed.
            let fh: fs.promises.FileHandle;
            try {
              fh = await fs.promises.open(abs, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === "EEXIST") exists(name, "entry");
              throw err;
            }
            try {
              for await (const chunk of entry) {
                const buf = chunk as Buffer;
                let off = 0;
                while (off < buf.byteLength) off += (await fh.write(buf, off, buf.byteLength - off)).bytesWritten;
                written += buf.byteLength;
                progress.bytes += buf.byteLength;
                report.update(progress);
              }
              await fh.chmod(mode);
              await fh.utimes(mtime, mtime);
            } finally {
              await fh.close();
            }
          }
          if (written !== size) throw refuse(`entry ${JSON.stringify(name)} holds ${written} of its ${size} bytes (truncated)`);
          break;
        }
        case "symlink": {
          if (name === "") throw refuse("a symlink entry names the root");
          await parentOk(name);
          const target = h.linkname ?? "";
          if (target === "" || target.includes("\0")) throw refuse(`symlink ${JSON.stringify(name)} has no valid target`);
          const kind = model.get(name);
          if (kind !== undefined) exists(name, kind);
          model.set(name, "symlink");
          if (dest !== undefined) {
            await fs.promises.symlink(target, abs);
            await fs.promises.lutimes(abs, mtime, mtime);
          }
          break;
        }
        case "link": {
          if (name === "") throw refuse("a hardlink entry names the root");
          const raw = h.linkname ?? "";
          let target: string;
          try {
            target = safeName(raw);
          } catch {
            throw refuse(`hardlink ${JSON.stringify(name)} points outside the archive (${JSON.stringify(raw)})`);
          }
          // Only to a regular file this archive wrote (never a host file, never through a link).
          if (model.get(target) !== "file") throw refuse(`hardlink ${JSON.stringify(name)} points to ${JSON.stringify(raw)}, which is not a file of this archive`);
          await parentOk(name);
          const kind = model.get(name);
          if (kind !== undefined) exists(name, kind);
          model.set(name, "file");
          if (dest !== undefined) await fs.promises.link(path.join(dest, target), abs);
          break;
        }
        case "character-device":
        case "block-device":
          throw refuse(`entry ${JSON.stringify(name)} is a device node`);
        case "fifo":
          throw refuse(`entry ${JSON.stringify(name)} is a FIFO`);
        default:
          throw refuse(`entry ${JSON.stringify(name)} is of type ${String(h.type)}, which is not archived data`);
      }
      // The rest of an entry that was not read (directories, links) is drained.
      entry.resume();
      progress.files++;
      report.update(progress);
    }
    await feeding;
  } catch (err) {
    // Stop unpacking; the input is drained (not destroyed) so its sender gets an answer.
    ownSource.unpipe(gunzip);
    ownSource.resume();
    extract.destroy();
    gunzip.destroy();
    if (err instanceof WorkspaceError) throw err;
    // The stream's own failure is the clearer one (a gzip error surfaces as "premature close" here).
    const cause = await feeding.then(() => err, (e: unknown) => e);
    if (cause instanceof WorkspaceError) throw cause;
    throw describeArchiveError(cause);
  }
  // Directory modes and times last (children changed their mtimes), deepest first.
  for (const d of dirTimes.reverse()) {
    await fs.promises.chmod(d.abs, d.mode);
    await fs.promises.utimes(d.abs, d.mtime, d.mtime);
  }
  report.flush();
  return { ...progress, entries };
}

function describeArchiveError(err: unknown): WorkspaceError {
  const e = err as NodeJS.ErrnoException;
  const msg = describeError(err);
  if (typeof e?.code === "string" && e.code.startsWith("Z_")) return new WorkspaceError("invalid_argument", `the archive is not valid gzip: ${msg}`, { cause: err });
  if (/unexpected end|premature close|invalid tar|checksum|unknown format|Invalid tar header/i.test(msg)) {
    return new WorkspaceError("invalid_argument", `the archive is corrupt or truncated: ${msg}`, { cause: err });
  }
  if (e?.code === "ENOSPC") return new WorkspaceError("resource_exhausted", `no space left to unpack the archive: ${msg}`, { cause: err });
  return new WorkspaceError("internal", `unpacking the archive failed: ${msg}`, { cause: err });
}

// ------------------------------------------------------------------ verify

export interface VerifyResult {
  entries: number;
  bytes: number;
  sha256: string;
}

/** Reads a tar.gz file back whole (gunzip, every tar header and byte): entries, content bytes and the file's sha256. */
export async function verifyArchiveFile(file: string): Promise<VerifyResult> {
  const hash = createHash("sha256");
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const extract = tar.extract();
  const feeding = pipeline(fs.createReadStream(file), tap, zlib.createGunzip(), extract);
  feeding.catch(() => undefined);
  let entries = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      entries++;
      for await (const chunk of entry) bytes += (chunk as Buffer).byteLength;
    }
    await feeding;
  } catch (err) {
    const cause = await feeding.then(() => err, (e: unknown) => e);
    throw new WorkspaceError("internal", `the archive ${file} does not read back: ${describeError(cause)}`, { cause });
  }
  return { entries, bytes, sha256: hash.digest("hex") };
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
