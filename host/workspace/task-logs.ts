// Rotation of workspace task logs. containerd's runc shim writes a task's stdout
// and stderr to <data_root>/logs/<container>.log (a `file://` log URI) and keeps
// that file open with O_APPEND for the life of the task, so the file cannot be
// renamed away: the shim would go on writing into the renamed file. Rotation is
// therefore copytruncate: copy the content to <log>.1 (older copies move up to
// .2 … .keep, the oldest is dropped), then truncate the original in place. With
// O_APPEND every write of the shim goes to the current end of the file, so after
// the truncation its next output lands at offset 0 instead of leaving a hole of
// NULs. Output written between the end of the copy and the truncation is lost;
// that window is a few system calls long.
//
// The logs dir belongs to the host, but nothing here follows a symlink: the log
// is opened with O_NOFOLLOW and must be a regular file, and copies are written
// to a fresh temporary file that is renamed into place.
import fs from "node:fs/promises";
import { constants as fsConstants } from "node:fs";
import path from "node:path";

export interface TaskLogRotationOptions {
  /** A log larger than this many bytes is rotated. */
  maxBytes: number;
  /** Rotated copies kept (<log>.1 is the newest); 0 only truncates. */
  keep: number;
}

/** The most rotated copies kept (and looked for when cleaning up after a smaller `keep`). */
export const MAX_TASK_LOG_KEEP = 20;

const COPY_CHUNK = 1024 * 1024;

export class TaskLogError extends Error {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`task log ${file}: ${message}`, options);
    this.name = "TaskLogError";
  }
}

function checkOptions(opts: TaskLogRotationOptions): void {
  if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 1) {
    throw new RangeError(`task log rotation: maxBytes must be a positive integer, got ${String(opts.maxBytes)}`);
  }
  if (!Number.isInteger(opts.keep) || opts.keep < 0 || opts.keep > MAX_TASK_LOG_KEEP) {
    throw new RangeError(`task log rotation: keep must be an integer from 0 to ${MAX_TASK_LOG_KEEP}, got ${String(opts.keep)}`);
  }
}

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Rotates one task log when it is larger than `maxBytes`. A missing log is "unchanged"; a
 * path that is a symlink or anything but a regular file is refused with a TaskLogError.
 */
export async function rotateTaskLog(file: string, opts: TaskLogRotationOptions): Promise<"rotated" | "unchanged"> {
  checkOptions(opts);
  let st;
  try {
    st = await fs.lstat(file);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return "unchanged";
    throw err;
  }
  if (!st.isFile()) throw new TaskLogError(file, `not a regular file (${describeType(st)}): refusing to rotate it`);
  if (st.size <= opts.maxBytes) return "unchanged";

  let log: fs.FileHandle;
  try {
    // O_NOFOLLOW: the path may have been swapped for a symlink since lstat.
    log = await fs.open(file, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return "unchanged";
    if (errnoCode(err) === "ELOOP") throw new TaskLogError(file, "is a symlink: refusing to rotate it", { cause: err });
    throw err;
  }
  try {
    const opened = await log.stat();
    if (!opened.isFile()) throw new TaskLogError(file, `not a regular file (${describeType(opened)}): refusing to rotate it`);
    if (opts.keep > 0) {
      await shiftCopies(file, opts.keep);
      await copyToFirst(log, file, opened.mode & 0o777);
    }
    await log.truncate(0);
  } finally {
    await log.close();
  }
  await removeCopiesBeyond(file, opts.keep);
  return "rotated";
}

function describeType(st: { isDirectory(): boolean; isSymbolicLink(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (st.isSymbolicLink()) return "a symlink";
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  return "a device or other special file";
}

/** <log>.(keep-1) → <log>.keep, …, <log>.1 → <log>.2; the old <log>.keep is replaced (dropped). */
async function shiftCopies(file: string, keep: number): Promise<void> {
  for (let n = keep - 1; n >= 1; n--) {
    try {
      // rename moves a symlink itself, never what it points to.
      await fs.rename(`${file}.${n}`, `${file}.${n + 1}`);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
  }
}

/** Copies the open log, up to its end at the time of the copy, to a new <log>.1. */
async function copyToFirst(log: fs.FileHandle, file: string, mode: number): Promise<void> {
  const target = `${file}.1`;
  const tmp = `${file}.1.rotating`;
  await fs.rm(tmp, { force: true });
  // "wx" is O_CREAT|O_EXCL: never opens what an existing path (or symlink) points to.
  const out = await fs.open(tmp, "wx", mode);
  try {
    const buf = Buffer.allocUnsafe(COPY_CHUNK);
    let position = 0;
    for (;;) {
      const { bytesRead } = await log.read(buf, 0, buf.length, position);
      if (bytesRead === 0) break;
      await out.write(buf, 0, bytesRead);
      position += bytesRead;
    }
  } catch (err) {
    await out.close().catch(() => {});
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await out.close();
  await fs.rename(tmp, target);
}

/** Removes <log>.N for N > keep, left over from a larger `keep`. */
async function removeCopiesBeyond(file: string, keep: number): Promise<void> {
  for (let n = keep + 1; n <= MAX_TASK_LOG_KEEP; n++) await fs.rm(`${file}.${n}`, { force: true });
}

export interface TaskLogsRotation {
  /** Logs that were rotated. */
  rotated: string[];
  /** Logs that could not be rotated (a symlink, a directory named *.log, an I/O error); the others were still done. */
  failed: Array<{ file: string; error: Error }>;
}

/** Rotates every `*.log` directly in dir (not the rotated copies). A missing dir has nothing to rotate. */
export async function rotateTaskLogs(dir: string, opts: TaskLogRotationOptions): Promise<TaskLogsRotation> {
  checkOptions(opts);
  const result: TaskLogsRotation = { rotated: [], failed: [] };
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return result;
    throw err;
  }
  for (const name of names.filter((n) => n.endsWith(".log")).sort()) {
    const file = path.join(dir, name);
    try {
      if ((await rotateTaskLog(file, opts)) === "rotated") result.rotated.push(file);
    } catch (err) {
      result.failed.push({ file, error: err instanceof Error ? err : new Error(String(err)) });
    }
  }
  return result;
}
