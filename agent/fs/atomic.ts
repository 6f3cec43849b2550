// Atomic file replacement for WriteFile and WriteRaw: the bytes go to a temp
// file in the target's directory, which is fsynced and renamed over the target.
// Readers see the old file or the new one, never a torn one, and a failed or
// abandoned write leaves neither a partial target nor temp litter behind.
import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import fs, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { failedPrecondition, invalidArgument } from "../errors.js";
import { isErrno, lstatOrUndefined } from "./errno.js";

export const DEFAULT_FILE_MODE = 0o644;
/** Marks our temp files, so an operator can tell them from user files. */
export const TEMP_MARKER = ".memoh-tmp-";

/** Validates a permission-bits field; 0 means `fallback`. */
export function modeOrDefault(mode: number, fallback: number, field = "mode"): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw invalidArgument(`${field} ${mode.toString(8)} is not a permission mask (0..07777 octal)`);
  }
  return mode === 0 ? fallback : mode;
}

/** `.<base>.memoh-tmp-<random>` next to target; the base is shortened to stay under NAME_MAX. */
export function tempPathFor(target: string): string {
  const base = path.basename(target).slice(0, 128);
  return path.join(path.dirname(target), `.${base}${TEMP_MARKER}${randomBytes(6).toString("hex")}`);
}


interface Destination {
  /** The file to replace: the request path, or where a symlink there points. */
  path: string;
  /** The existing file, if any: its mode and owner are kept. */
  existing?: Stats;
}

/**
 * Where a write to `target` lands. A symlink is written through (like `cat > link`)
 * so the link survives; directories and special files (devices, FIFOs, sockets)
 * are refused rather than replaced by a regular file.
 */
async function destinationOf(target: string): Promise<Destination> {
  let dest = target;
  let st = await lstatOrUndefined(dest);
  if (st?.isSymbolicLink()) {
    try {
      dest = await fs.realpath(target);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
      // Dangling link: create what it points to (one level, as open(2) would).
      dest = path.resolve(path.dirname(target), await fs.readlink(target));
    }
    st = await lstatOrUndefined(dest);
  }
  if (st?.isDirectory()) throw invalidArgument(`${target} is a directory`);
  if (st && !st.isFile()) throw invalidArgument(`${target} is not a regular file`);
  return st ? { path: dest, existing: st } : { path: dest };
}

/** A temp file that becomes the target on commit() and disappears on discard(). */
export class AtomicFile {
  private fh: FileHandle | undefined;
  private done = false;

  private constructor(
    /** The path the client named. */
    readonly target: string,
    /** The file that commit() replaces (differs from target behind a symlink). */
    readonly destination: string,
    readonly tempPath: string,
    fh: FileHandle,
  ) {
    this.fh = fh;
  }

  /**
   * Opens a temp file for `target`, creating missing parent directories. A new
   * file gets `mode`; an existing one keeps its mode (and owner, when we are root).
   */
  static async create(target: string, mode: number): Promise<AtomicFile> {
    const dest = await destinationOf(target);
    const tempPath = tempPathFor(dest.path);
    let fh: FileHandle;
    try {
      fh = await fs.open(tempPath, "wx", 0o600);
    } catch (err) {
      if (isErrno(err, "ENOTDIR")) throw failedPrecondition(`${target}: a parent is not a directory`);
      if (!isErrno(err, "ENOENT")) throw err;
      await fs.mkdir(path.dirname(dest.path), { recursive: true });
      fh = await fs.open(tempPath, "wx", 0o600);
    }
    const file = new AtomicFile(target, dest.path, tempPath, fh);
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
      await fs.rename(this.tempPath, this.destination);
      this.done = true;
    } catch (err) {
      await this.discard();
      throw err;
    }
    await syncDir(path.dirname(this.destination));
  }

  /** Closes and removes the temp file; safe to call more than once. */
  async discard(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
    await fs.rm(this.tempPath, { force: true });
  }

  private handle(): FileHandle {
    if (!this.fh || this.done) throw new Error(`temp file for ${this.target} is already closed`);
    return this.fh;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes `content` to `target` atomically; the one-shot form of AtomicFile. */
export async function writeAtomically(target: string, content: Uint8Array, mode: number): Promise<void> {
  const file = await AtomicFile.create(target, mode);
  try {
    await file.write(content);
  } catch (err) {
    await file.discard();
    throw err;
  }
  await file.commit();
}
