// Atomic file replacement for WriteFile and WriteRaw: the bytes go to a temp
// file in the target's directory, which is fsynced and renamed over the target.
// Readers see the old file or the new one, never a torn one, and a failed or
// abandoned write leaves neither a partial target nor temp litter behind.
import { randomBytes } from "node:crypto";
import { unlinkSync, type Stats } from "node:fs";
import fs, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { errnoAt, failedPrecondition, invalidArgument, RpcError, Status } from "../errors.js";
import { FsPath, NAME_MAX_BYTES, showBytes, truncateName } from "../paths.js";
import { isErrno, lstatOrUndefined } from "./errno.js";
import { kindOf } from "./fileinfo.js";
import { mkdirParents } from "./mkdirp.js";

export const DEFAULT_FILE_MODE = 0o644;
/** Marks our temp files, so an operator can tell them from user files. */
export const TEMP_MARKER = ".memoh-tmp-";
/** Hex digits of a temp name's random part. */
const TEMP_RANDOM_HEX = 12;
/** Bytes of the target's name kept in a temp name: "." + base + marker + random fits NAME_MAX. */
export const TEMP_BASE_MAX_BYTES = NAME_MAX_BYTES - 1 - TEMP_MARKER.length - TEMP_RANDOM_HEX;

/** Validates a permission-bits field; 0 means `fallback`. */
export function modeOrDefault(mode: number, fallback: number, field = "mode"): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw invalidArgument(`${field} ${mode.toString(8)} is not a permission mask (0..07777 octal)`);
  }
  return mode === 0 ? fallback : mode;
}

/**
 * `.<base>.memoh-tmp-<random>` next to target. The base is the target's name
 * cut to TEMP_BASE_MAX_BYTES bytes (at a character boundary when it is UTF-8),
 * so the temp name fits NAME_MAX (255 bytes) whatever the target's name.
 */
export function tempPathFor(target: FsPath): FsPath {
  const base = truncateName(target.name, TEMP_BASE_MAX_BYTES);
  const random = randomBytes(TEMP_RANDOM_HEX / 2).toString("hex");
  return target.parent().child(Buffer.concat([Buffer.from("."), base, Buffer.from(TEMP_MARKER + random)]));
}

/** Why a write may not replace `st`, or undefined when it may (a regular file). */
function refusal(target: FsPath, st: Stats): Error | undefined {
  if (st.isFile()) return undefined;
  if (st.isDirectory()) return invalidArgument(`${target} is a directory`);
  return failedPrecondition(
    `${target} is ${kindOf(st)}, not a regular file; a write replaces regular files only. ` +
      `To replace it with a regular file, DeleteFile it first; to write into it, use Exec (e.g. sh -c 'cat > FILE' with the bytes on stdin)`,
  );
}

interface Destination {
  /** The file to replace: the request path, or where a symlink there points. */
  path: FsPath;
  /** The existing file, if any: its mode and owner are kept. */
  existing?: Stats;
}

/** Symbolic links one write follows at most, as Linux's path lookup (MAXSYMLINKS): one more is ELOOP. */
export const MAX_SYMLINK_HOPS = 40;

function tooManyLinks(target: FsPath): Error {
  return invalidArgument(
    `${target}: too many levels of symbolic links (a loop, or a chain of more than ${MAX_SYMLINK_HOPS}); nothing was written`,
  );
}

/**
 * Where a write to `target` lands. A symlink is written through (like `cat > link`)
 * so the link survives; directories and special files (devices, FIFOs, sockets)
 * are refused rather than replaced by a regular file.
 */
async function destinationOf(target: FsPath): Promise<Destination> {
  let dest = target;
  let st = await lstatOrUndefined(dest.bytes);
  if (st?.isSymbolicLink()) {
    try {
      dest = new FsPath(await fs.realpath(target.bytes, { encoding: "buffer" }));
    } catch (err) {
      if (isErrno(err, "ELOOP")) throw tooManyLinks(target);
      if (!isErrno(err, "ENOENT")) throw errnoAt(err, target.shown);
      dest = await danglingDestination(target);
    }
    st = await lstatOrUndefined(dest.bytes);
  }
  const refused = st && refusal(target, st);
  if (refused) throw refused;
  return st ? { path: dest, existing: st } : { path: dest };
}

/**
 * What open(2) with O_CREAT creates for a symlink that leads nowhere: the end of
 * its chain of links (l1 -> l2 -> missing), up to MAX_SYMLINK_HOPS links. Each
 * link's target is taken from the directory the link really lies in, as the
 * kernel does: with `sub -> real/deep` and `real/deep/link -> ../out.txt`, a
 * write to `sub/link` creates `real/out.txt`, not the `out.txt` beside `sub`.
 */
async function danglingDestination(target: FsPath): Promise<FsPath> {
  let link = target;
  for (let hops = 1; hops <= MAX_SYMLINK_HOPS; hops++) {
    let to: Buffer;
    try {
      to = await fs.readlink(link.bytes, { encoding: "buffer" });
    } catch (err) {
      throw errnoAt(err, target.shown);
    }
    const next = await linkTarget(target, link, to);
    if (!(await lstatOrUndefined(next.bytes))?.isSymbolicLink()) return next;
    link = next;
  }
  throw tooManyLinks(target);
}

/**
 * The file `link` (which holds `to`) names, normalised on real paths. Its
 * directory part goes through realpath, which takes every ".." after the
 * symlinks before it, as path lookup does. When that directory does not exist
 * yet (a write creates missing parents), `to` is resolved by name against the
 * real directory of the link.
 */
async function linkTarget(target: FsPath, link: FsPath, to: Buffer): Promise<FsPath> {
  // latin1: one char per byte, so node:path works on the bytes ("/" and "." are ASCII).
  const text = to.toString("latin1");
  const base = text.slice(text.lastIndexOf("/") + 1);
  if (base === "" || base === "." || base === "..") {
    throw invalidArgument(`${target} is a symbolic link to ${showBytes(to)}, which is a directory, not a file; nothing was written`);
  }
  const linkDir = link.parent().bytes.toString("latin1");
  const named = path.posix.isAbsolute(text) ? text : `${linkDir === "/" ? "" : linkDir}/${text}`;
  const dir = named.slice(0, named.lastIndexOf("/")) || "/";
  try {
    return new FsPath(await fs.realpath(Buffer.from(dir, "latin1"), { encoding: "buffer" })).child(base);
  } catch (err) {
    if (isErrno(err, "ELOOP")) throw tooManyLinks(target);
    if (!isErrno(err, "ENOENT") && !isErrno(err, "ENOTDIR")) throw errnoAt(err, target.shown);
  }
  let realLinkDir: string;
  try {
    realLinkDir = (await fs.realpath(link.parent().bytes, { encoding: "buffer" })).toString("latin1");
  } catch (err) {
    throw errnoAt(err, target.shown);
  }
  return new FsPath(Buffer.from(path.posix.resolve(realLinkDir, text), "latin1"));
}

/** Temp files not yet committed or discarded: removed when the agent exits. */
const live = new Set<AtomicFile>();
/** AtomicFile.create calls under way (a temp file may be opening). */
const creating = new Set<Promise<unknown>>();
/** discard() calls under way (a temp file being closed and removed). */
const discarding = new Set<Promise<void>>();
let exiting = false;

/**
 * The agent is exiting: refuses new temp files, waits for the ones being
 * created, then removes every temp file not yet committed.
 */
export async function discardAllTempFiles(): Promise<void> {
  exiting = true;
  await Promise.allSettled([...creating]);
  await Promise.allSettled([...live].map((f) => f.discard()));
  await Promise.allSettled([...discarding]);
}

/** The same, synchronously, for an agent that is about to exit at once (a crash). */
export function discardAllTempFilesSync(): void {
  exiting = true;
  for (const f of live) {
    try {
      unlinkSync(f.tempPath.bytes);
    } catch {
      // already gone
    }
  }
  live.clear();
}

/** A temp file that becomes the target on commit() and disappears on discard(). */
export class AtomicFile {
  private fh: FileHandle | undefined;
  private done = false;
  private discarded: Promise<void> | undefined;

  private constructor(
    /** The path the client named, as messages show it. */
    readonly target: string,
    /** The file that commit() replaces (differs from the target behind a symlink). */
    readonly destination: FsPath,
    readonly tempPath: FsPath,
    fh: FileHandle,
  ) {
    this.fh = fh;
    live.add(this);
  }

  /**
   * Opens a temp file for `target`, creating missing parent directories. A new
   * file gets `mode`; an existing one keeps its mode (and owner, when we are root).
   */
  static async create(target: FsPath | string, mode: number): Promise<AtomicFile> {
    if (exiting) throw new RpcError(Status.UNAVAILABLE, "the agent is shutting down");
    const created = AtomicFile.open(target, mode);
    creating.add(created);
    try {
      return await created;
    } finally {
      creating.delete(created);
    }
  }

  private static async open(target: FsPath | string, mode: number): Promise<AtomicFile> {
    const named = typeof target === "string" ? FsPath.fromText(target) : target;
    const dest = await destinationOf(named);
    const tempPath = tempPathFor(dest.path);
    const parentNotDir = () => failedPrecondition(`${named}: a parent is not a directory`);
    let fh: FileHandle;
    try {
      fh = await fs.open(tempPath.bytes, "wx", 0o600);
    } catch (err) {
      if (isErrno(err, "ENOTDIR")) throw parentNotDir();
      if (!isErrno(err, "ENOENT")) throw errnoAt(err, named.shown);
      try {
        await mkdirParents(dest.path.parent());
        fh = await fs.open(tempPath.bytes, "wx", 0o600);
      } catch (err2) {
        if (isErrno(err2, "ENOTDIR") || isErrno(err2, "EEXIST")) throw parentNotDir();
        throw errnoAt(err2, named.shown);
      }
    }
    const file = new AtomicFile(named.shown, dest.path, tempPath, fh);
    try {
      const existing = dest.existing;
      // The agent runs as root: a file it rewrites for a user should stay theirs.
      // (chown before chmod: chown clears the setuid and setgid bits.)
      if (existing && process.geteuid?.() === 0 && (existing.uid !== 0 || existing.gid !== 0)) {
        await fh.chown(existing.uid, existing.gid);
      }
      // Explicit chmod: the open mode is filtered by the umask, the requested one is not.
      await fh.chmod(existing ? existing.mode & 0o7777 : mode);
    } catch (err) {
      await file.discard();
      throw err;
    }
    return file;
  }

  /** Appends all of `data`. */
  async write(data: Uint8Array): Promise<void> {
    const fh = this.handle();
    let written = 0;
    while (written < data.byteLength) {
      const { bytesWritten } = await fh.write(data, written, data.byteLength - written);
      written += bytesWritten;
    }
  }

  /**
   * fsync, then rename over the destination, then fsync the directory so the
   * rename survives a crash. `beforeRename` may throw to call the commit off at
   * the last moment (the temp file is then discarded).
   */
  async commit(beforeRename?: () => void): Promise<void> {
    const fh = this.handle();
    try {
      await fh.sync();
      this.fh = undefined;
      await fh.close();
      beforeRename?.();
      await fs.rename(this.tempPath.bytes, this.destination.bytes);
      this.done = true;
      live.delete(this);
    } catch (err) {
      await this.discard();
      throw errnoAt(err, this.target);
    }
    await syncDir(this.destination.parent());
  }

  /** Closes and removes the temp file; safe to call more than once (later calls wait for the first). */
  discard(): Promise<void> {
    if (this.discarded) return this.discarded;
    if (this.done) return Promise.resolve();
    this.done = true;
    live.delete(this);
    const removal = this.removeTemp();
    this.discarded = removal;
    discarding.add(removal);
    const forget = () => discarding.delete(removal);
    removal.then(forget, forget);
    return removal;
  }

  private async removeTemp(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
    await fs.unlink(this.tempPath.bytes).catch((err: unknown) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  }

  private handle(): FileHandle {
    if (!this.fh || this.done) throw new Error(`temp file for ${this.target} is already closed`);
    return this.fh;
  }
}

async function syncDir(dir: FsPath): Promise<void> {
  const fh = await fs.open(dir.bytes, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `content` to `target` atomically; the one-shot form of AtomicFile. */
export async function writeAtomically(target: FsPath, content: Uint8Array, mode: number): Promise<void> {
  const file = await AtomicFile.create(target, mode);
  try {
    await file.write(content);
  } catch (err) {
    await file.discard();
    throw err;
  }
  await file.commit();
}
