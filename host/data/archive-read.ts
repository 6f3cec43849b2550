// The workspace data archive, reading side: extract a tar.gz, and read a written one back.
//
// Reading (extract): into an empty staging directory, every entry checked before it is
// written: no absolute path, no `..`, nothing written through a symlink (every parent is
// a real directory of the staging tree; files are created with O_EXCL, which never
// follows a link), hardlinks only to a regular file already extracted from the same
// archive, no devices or FIFOs, at most `maxEntries` entries and `maxBytes` of content
// (the decompressed stream is counted too, so a gzip bomb stops early), and a corrupt or
// truncated gzip or tar is an error. The caller throws the staging tree away on error.
//
// Owners (uid/gid, numeric; PAX `uid` / `gid` when larger than ustar holds) are restored,
// as tar does when run as root; setuid and setgid bits never are.
//
// Names are the exact bytes archive.ts wrote (`MEMOH.rawpath` / `MEMOH.rawlinkpath` when
// not UTF-8, else the tar name), checked as bytes, and written as bytes; a path too long
// for one system call is reached through its ancestors opened on the way (raw-names.ts),
// so what a backup holds is restorable whatever its names and depth.
import fs from "node:fs";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { DEFAULT_ARCHIVE_LIMITS, RAW_LINKPATH_KEY, RAW_PATH_KEY, hashingStream, throttle, type ArchiveLimits, type ArchiveProgress } from "./archive.js";
import { atPath, binaryOf, shortName, shownBinary } from "./raw-names.js";

/**
 * The longest entry path (bytes) an archive may hold unless its limits say otherwise: far
 * more than any path the agent can name (PATH_MAX), enough for the deep trees an export
 * reaches through fds, and a bound on what the checking model of one entry holds.
 */
export const DEFAULT_MAX_PATH_BYTES = 64 * 1024;

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

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The exact bytes of an entry's path (`which` = "path") or link target ("linkpath"): the
 * project's raw record when the archive has one, else the tar header's (UTF-8) text.
 */
export function rawHeaderName(h: tar.Header, which: "path" | "linkpath"): Buffer {
  const pax = (h.pax ?? undefined) as Record<string, string> | undefined;
  const raw = pax?.[which === "path" ? RAW_PATH_KEY : RAW_LINKPATH_KEY];
  const text = which === "path" ? h.name : (h.linkname ?? "");
  if (raw === undefined) return Buffer.from(text ?? "", "utf8");
  if (raw.length % 4 !== 0 || !BASE64.test(raw)) throw refuse(`entry ${JSON.stringify(h.name)} has a malformed ${which === "path" ? RAW_PATH_KEY : RAW_LINKPATH_KEY} record`);
  return Buffer.from(raw, "base64");
}

/**
 * The entry's name as a safe relative path ("" for the root itself), or why it is
 * refused. Checked as bytes; the result is a binary string (one character per byte,
 * raw-names.ts).
 */
export function safeName(raw: Uint8Array, maxPathBytes = DEFAULT_MAX_PATH_BYTES): string {
  const bin = binaryOf(raw);
  const shown = JSON.stringify(shortName(raw));
  if (bin.includes("\0")) throw refuse(`entry name ${shown} holds a NUL byte`);
  if (bin.startsWith("/")) throw refuse(`entry ${shown} has an absolute path`);
  const parts = bin.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(`entry ${shown} climbs out with ..`);
  const long = parts.find((p) => p.length > 255);
  if (long !== undefined) throw refuse(`entry ${shown} has a name of ${long.length} bytes (a file name is at most 255)`);
  const name = parts.join("/");
  if (name.length > maxPathBytes) throw refuse(`entry name of ${name.length} bytes is too long (at most ${maxPathBytes})`);
  return name;
}

/** The largest uid or gid Linux gives out ((uid_t)-1 means "unchanged"). */
const MAX_ID = 0xfffffffe;

/** The entry's numeric owner: PAX `uid` / `gid` when the archive has them, else the ustar fields. */
export function ownerOf(h: tar.Header): { uid: number; gid: number } {
  const pax = (h.pax ?? undefined) as Record<string, string> | undefined;
  const id = (which: "uid" | "gid"): number => {
    const text = pax?.[which];
    const v = text === undefined ? (h[which] ?? 0) : /^\d{1,10}$/.test(text) ? Number(text) : NaN;
    if (!Number.isInteger(v) || v < 0 || v > MAX_ID) throw refuse(`entry ${JSON.stringify(h.name)} has an invalid ${which} ${JSON.stringify(text ?? String(h[which]))}`);
    return v;
  };
  return { uid: id("uid"), gid: id("gid") };
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
  const dirTimes: Array<{ rel: string; mode: number; mtime: Date; owner: { uid: number; gid: number } }> = [];
  // Only root can give files away; an unprivileged extract (never the orchestrator's) keeps its own.
  const chown = process.getuid?.() === 0;
  const maxPathBytes = limits.maxPathBytes ?? DEFAULT_MAX_PATH_BYTES;
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

  const q = (bin: string) => JSON.stringify(shownBinary(bin));
  const exists = (name: string, kind: string): never => {
    throw refuse(`entry ${q(name)} appears twice or clashes with an earlier ${kind}`);
  };
  // Names are binary strings (raw-names.ts); every write goes through atPath, which
  // reaches a path too long for one system call through its ancestors.
  const at = <T>(rel: string, fn: (p: Buffer) => Promise<T> | T): Promise<T> => atPath(dest!, rel, fn);
  /** Every ancestor must be a directory of the archive (made when not listed, like tar does), never a symlink. */
  const parentOk = async (name: string): Promise<void> => {
    const parts = name.split("/");
    let rel = "";
    for (const part of parts.slice(0, -1)) {
      rel = rel === "" ? part : `${rel}/${part}`;
      const kind = model.get(rel);
      if (kind === "dir") continue;
      if (kind === "symlink") throw refuse(`entry ${q(name)} would be written through the symlink ${q(rel)}`);
      if (kind === "file") throw refuse(`entry ${q(name)} needs ${q(rel)} to be a directory`);
      if (dest !== undefined) await at(rel, (p) => fs.promises.mkdir(p, { mode: 0o755 }));
      model.set(rel, "dir");
    }
  };

  try {
    for await (const entry of extract) {
      const h = entry.header;
      entries++;
      if (entries > limits.maxEntries) throw new WorkspaceError("payload_too_large", `the archive is refused: it holds more than ${limits.maxEntries} entries`);
      const name = safeName(rawHeaderName(h, "path"), maxPathBytes);
      const size = h.size ?? 0;
      declared += size;
      if (declared > limits.maxBytes) throw tooLarge();
      const mode = (h.mode ?? 0o644) & 0o1777; // no setuid/setgid bits
      const mtime = h.mtime ?? new Date();
      const owner = ownerOf(h);
      switch (h.type) {
        case "directory": {
          if (name !== "") {
            await parentOk(name);
            const kind = model.get(name);
            if (kind !== undefined && kind !== "dir") exists(name, kind);
            if (kind === undefined && dest !== undefined) await at(name, (p) => fs.promises.mkdir(p, { mode: 0o700 }));
            model.set(name, "dir");
          }
          if (dest !== undefined) dirTimes.push({ rel: name, mode, mtime, owner });
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
              fh = await at(name, (p) => fs.promises.open(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600));
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
              // chown first: it clears mode bits the chmod then sets.
              if (chown) await fh.chown(owner.uid, owner.gid);
              await fh.chmod(mode);
              await fh.utimes(mtime, mtime);
            } finally {
              await fh.close();
            }
          }
          if (written !== size) throw refuse(`entry ${q(name)} holds ${written} of its ${size} bytes (truncated)`);
          break;
        }
        case "symlink": {
          if (name === "") throw refuse("a symlink entry names the root");
          await parentOk(name);
          const target = rawHeaderName(h, "linkpath");
          if (target.byteLength === 0 || target.includes(0)) throw refuse(`symlink ${q(name)} has no valid target`);
          const kind = model.get(name);
          if (kind !== undefined) exists(name, kind);
          model.set(name, "symlink");
          if (dest !== undefined) {
            await at(name, async (p) => {
              await fs.promises.symlink(target, p);
              if (chown) await fs.promises.lchown(p, owner.uid, owner.gid);
              await fs.promises.lutimes(p, mtime, mtime);
            });
          }
          break;
        }
        case "link": {
          if (name === "") throw refuse("a hardlink entry names the root");
          const raw = rawHeaderName(h, "linkpath");
          let target: string;
          try {
            target = safeName(raw, maxPathBytes);
          } catch {
            throw refuse(`hardlink ${q(name)} points outside the archive (${JSON.stringify(shortName(raw))})`);
          }
          // Only to a regular file this archive wrote (never a host file, never through a link).
          if (model.get(target) !== "file") throw refuse(`hardlink ${q(name)} points to ${JSON.stringify(shortName(raw))}, which is not a file of this archive`);
          await parentOk(name);
          const kind = model.get(name);
          if (kind !== undefined) exists(name, kind);
          model.set(name, "file");
          if (dest !== undefined) await at(target, (from) => at(name, (to) => fs.promises.link(from, to)));
          break;
        }
        case "character-device":
        case "block-device":
          throw refuse(`entry ${q(name)} is a device node`);
        case "fifo":
          throw refuse(`entry ${q(name)} is a FIFO`);
        default:
          throw refuse(`entry ${q(name)} is of type ${String(h.type)}, which is not archived data`);
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
    await at(d.rel, async (p) => {
      if (chown) await fs.promises.lchown(p, d.owner.uid, d.owner.gid);
      await fs.promises.chmod(p, d.mode);
      await fs.promises.utimes(p, d.mtime, d.mtime);
    });
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

/**
 * Reads a tar.gz file back whole (gunzip, every tar header and byte): entries, content
 * bytes and the file's sha256. Every entry's name (and link target) is decoded and checked
 * as a restore would (safeName, without a length cap), so an archive whose names a
 * restore would refuse does not read back.
 */
export async function verifyArchiveFile(file: string): Promise<VerifyResult> {
  const tap = hashingStream();
  const extract = tar.extract();
  const feeding = pipeline(fs.createReadStream(file), tap, zlib.createGunzip(), extract);
  feeding.catch(() => undefined);
  let entries = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      entries++;
      safeName(rawHeaderName(entry.header, "path"), Number.POSITIVE_INFINITY);
      if (entry.header.type === "symlink" || entry.header.type === "link") rawHeaderName(entry.header, "linkpath");
      for await (const chunk of entry) bytes += (chunk as Buffer).byteLength;
    }
    await feeding;
  } catch (err) {
    const cause = await feeding.then(() => err, (e: unknown) => e);
    throw new WorkspaceError("internal", `the archive ${file} does not read back: ${describeError(cause)}`, { cause });
  }
  return { entries, bytes, sha256: tap.digest().sha256 };
}

