// Preserve and restore: the bot's /data as `<dataRoot>/backups/<bot>.tar.gz`.
//
// A backup is written to a temporary file in the backups dir (0600), fsynced, read back
// whole (gunzip and every tar entry) and checked against what was written (sha256 of the
// file, entry count), and only then renamed into place (the directory fsynced). A backup
// that already exists is kept under `<bot>.<ms>.tar.gz`. Only a confirmed backup lets a
// delete go on; a failure resumes the workspace with its data and reports why.
// Restore imports the backup (import.ts: staged, swapped all or nothing) without the size
// and entry caps of user imports (what was backed up is restorable), and removes the
// backup only after that succeeded.
//
// A backup holds every file, directory and symlink of /data whatever its name's bytes or
// its path's length (archive.ts). Should the archive still leave any of them out, the
// backup is refused (`conflict`, naming them) and nothing is deleted; FIFOs, sockets and
// devices are not data: they are left out and listed in the result's `skipped`.
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { PassThrough } from "node:stream";
import { workspaceContainerId } from "../workspace/botid.js";
import type { WorkspaceContext } from "../workspace/context.js";
import { deleteWorkspace } from "../workspace/delete.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { startTask } from "../workspace/start.js";
import { ArchiveWriter, hashingStream, type ArchiveLimits, type ArchiveProgress } from "./archive.js";
import { verifyArchiveFile, type ExtractResult } from "./archive-read.js";
import { packSnapshot } from "./export.js";
import { importIntoRootfs, withWritableRootfs } from "./import.js";
import { backupPath, backupsDir, crashPoint, fsyncDir, pauseTask, removeJournal, rootfsOf, taskRunning, writeJournal, type DataOp } from "./workspace-fs.js";

export interface BackupResult extends ArchiveProgress {
  path: string;
  sha256: string;
  size: number;
  /** Entries left out that are not data (FIFOs, sockets, devices), with why. */
  skipped: string[];
}

/** Refuses a backup that left data out: it would not be a copy of /data. */
export function refuseIncomplete(botId: string, lost: readonly string[]): void {
  if (lost.length === 0) return;
  const shown = lost.slice(0, 5).join("; ");
  throw new WorkspaceError(
    "conflict",
    `the backup of bot ${botId}'s data cannot hold everything in /data, so nothing was deleted: ${shown}${lost.length > 5 ? ` and ${lost.length - 5} more` : ""}`,
  );
}

/** Whether the bot has a preserved backup. */
export function hasBackup(ctx: WorkspaceContext, botId: string): boolean {
  return fs.existsSync(backupPath(ctx, botId));
}

/**
 * Writes /data of the (not running) snapshot `key` to the bot's backup, confirmed on disk
 * and read back before it replaces anything. Throws when any step fails (the temporary
 * file is removed; an earlier backup stays).
 */
export async function writeBackup(
  ctx: WorkspaceContext,
  botId: string,
  containerId: string,
  key: string,
  snapshotter: string,
  op: DataOp,
  onProgress?: (p: ArchiveProgress) => void,
): Promise<BackupResult> {
  const dir = backupsDir(ctx);
  const final = backupPath(ctx, botId);
  const tmp = path.join(dir, `.${botId}.tar.gz.tmp-${process.pid}-${Date.now()}`);
  let fd: number | undefined;
  try {
    // From before the temporary file exists until it is renamed or removed: a crash in
    // between leaves the journal, and the repair removes the file (as large as /data).
    writeJournal(ctx, { op, botId, containerId, startedAt: new Date().toISOString() });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    const file = fs.createWriteStream("", { fd, autoClose: false });
    const hash = hashingStream();
    const pass = new PassThrough();
    const writing = pipeline(pass, hash, file);
    writing.catch(() => undefined);
    const writer = new ArchiveWriter(pass, onProgress ? { onProgress } : {});
    try {
      await packSnapshot(ctx, botId, key, snapshotter, writer);
    } catch (err) {
      writer.abort(err);
      throw err;
    }
    const packed = await writer.finish();
    await writing;
    refuseIncomplete(botId, packed.lost);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    const written = hash.digest();
    const back = await verifyArchiveFile(tmp);
    if (back.sha256 !== written.sha256 || back.entries !== packed.files || back.bytes !== packed.bytes) {
      throw new Error(`the backup read back differs from what was written (sha256 ${back.sha256} vs ${written.sha256}, ${back.entries} vs ${packed.files} entries, ${back.bytes} vs ${packed.bytes} bytes)`);
    }
    crashPoint(`${op}:verified`);
    if (fs.existsSync(final)) fs.renameSync(final, path.join(dir, `${botId}.${Date.now()}.tar.gz`));
    fs.renameSync(tmp, final);
    fsyncDir(dir);
    return { path: final, sha256: written.sha256, size: written.bytes, files: packed.files, bytes: packed.bytes, skipped: packed.skipped };
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    if (err instanceof WorkspaceError && err.code === "conflict") throw err;
    throw new WorkspaceError("unavailable", `the backup of bot ${botId}'s data to ${final} could not be written: ${describeError(err)}`, { cause: err });
  } finally {
    removeJournal(ctx, botId);
  }
}

/**
 * Stop, back /data up (confirmed), then delete. When the backup fails the workspace is
 * started again (if it ran) with its data and the error says why. Callers hold the lock.
 */
export async function deleteWithPreserve(ctx: WorkspaceContext, botId: string, onProgress?: (p: ArchiveProgress) => void): Promise<BackupResult> {
  const row = await ctx.liveRow(botId);
  const containerId = row?.containerId ?? workspaceContainerId(botId);
  const exists = await ctx.containerExists(containerId);
  let backup: BackupResult;
  if (exists) {
    const { key, snapshotter } = await rootfsOf(ctx, containerId);
    const wasRunning = await taskRunning(ctx, containerId);
    if (wasRunning) await pauseTask(ctx, botId, containerId);
    else await ctx.cd.tasks.stop(containerId, 0);
    try {
      backup = await writeBackup(ctx, botId, containerId, key, snapshotter, "preserve", onProgress);
    } catch (err) {
      if (wasRunning) {
        await startTask(ctx, botId, containerId).catch((e: unknown) => ctx.log(`${botId}: starting again after a failed backup: ${describeError(e)}`));
      }
      await ctx.store.recordEvent(containerId, "preserve_failed", { botId, error: describeError(err) });
      throw err;
    }
  } else if (await ctx.cd.snapshots.isActive(containerId)) {
    // The container is gone, its rootfs (with /data) is not.
    backup = await writeBackup(ctx, botId, containerId, containerId, ctx.cd.snapshots.snapshotter, "preserve", onProgress);
  } else {
    throw new WorkspaceError("not_found", `bot ${botId} has no workspace data to preserve`);
  }
  await ctx.store.recordEvent(containerId, "data_preserved", { botId, path: backup.path, sha256: backup.sha256, files: backup.files, bytes: backup.bytes, skipped: backup.skipped });
  await deleteWorkspace(ctx, botId);
  return backup;
}

/**
 * A rootfs left by a lost container (its /data) goes to the backup before a new
 * container is created on it or anything else replaces it. Returns undefined when there
 * is no such rootfs. Callers hold the lock.
 */
export async function backupOrphan(ctx: WorkspaceContext, botId: string): Promise<BackupResult | undefined> {
  const key = workspaceContainerId(botId);
  if (await ctx.containerExists(key)) return undefined;
  if (!(await ctx.cd.snapshots.isActive(key))) return undefined;
  ctx.log(`${botId}: the rootfs of a lost container is left; backing its /data up before anything replaces it`);
  const backup = await writeBackup(ctx, botId, key, key, ctx.cd.snapshots.snapshotter, "orphan_backup");
  await ctx.store.recordEvent(key, "orphan_backup", { botId, path: backup.path, sha256: backup.sha256, files: backup.files, skipped: backup.skipped });
  return backup;
}

/** Removes the bot's backup (after a restore that succeeded). */
function removeBackup(ctx: WorkspaceContext, botId: string): void {
  fs.rmSync(backupPath(ctx, botId), { force: true });
  fsyncDir(backupsDir(ctx));
}

/**
 * What a restore of the bot's own backup may unpack: anything. The backup was written
 * from the workspace's /data and read back whole without a cap (writeBackup), so a cap
 * here (the import limits, made for archives users upload) could refuse a backup that a
 * delete with preserve already counted on. Every entry is still checked as in any
 * extract (paths, links, types); only the size, entry and path length caps are lifted.
 */
export const BACKUP_RESTORE_LIMITS: ArchiveLimits = { maxBytes: Number.POSITIVE_INFINITY, maxEntries: Number.POSITIVE_INFINITY, maxPathBytes: Number.POSITIVE_INFINITY };

/**
 * Imports the bot's backup into its workspace (staged, swapped all or nothing; a running
 * workspace is paused and started again), then removes the backup. Callers hold the lock.
 */
export async function restoreFromBackup(ctx: WorkspaceContext, botId: string, opts: { onProgress?: (p: ArchiveProgress) => void } = {}): Promise<ExtractResult> {
  const file = backupPath(ctx, botId);
  if (!fs.existsSync(file)) throw new WorkspaceError("not_found", `bot ${botId} has no preserved data (${file})`);
  const row = await ctx.liveRow(botId);
  if (row === undefined || !(await ctx.containerExists(row.containerId))) throw new WorkspaceError("not_found", `bot ${botId} has no workspace to restore into`);
  const result = await withWritableRootfs(ctx, botId, row.containerId, "restore", (m) =>
    importIntoRootfs(m, fs.createReadStream(file), { limits: BACKUP_RESTORE_LIMITS, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) }),
  );
  await ctx.store.recordEvent(row.containerId, "data_restored", { botId, entries: result.entries, bytes: result.bytes });
  removeBackup(ctx, botId);
  return result;
}
