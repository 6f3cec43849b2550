// The host side of a workspace's filesystem for data operations: its rootfs snapshot
// mounted on the host (read-only for export, writable for import and restore) while its
// task is not running, the journal that says a data operation is under way, and pausing
// the task without changing what the row says (a workspace meant to run is started again
// afterwards, by the operation or, after a crash, by reconcile).
//
// Every data operation writes `<dataRoot>/data-ops/<bot>.json` before it touches
// anything and removes it when it is done; a journal found later means the operation was
// cut short, and repair.ts finishes it (unmounts what it mounted, completes or undoes a
// swap, records a committed version) before the workspace starts again.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { isMountPoint, mountReadOnly, unmount, type MountSpec } from "../containerd/snapshots.js";
import type { WorkspaceContext } from "../workspace/context.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { validateBotId } from "../workspace/botid.js";

const run = promisify(execFile);

/** Where the agent serves files from inside the container. */
export const DATA_DIR = "data";

export type DataOp = "export" | "import" | "preserve" | "restore" | "version" | "rollback" | "orphan_backup";

export interface Journal {
  op: DataOp;
  botId: string;
  containerId: string;
  startedAt: string;
  /** version / rollback: the committed snapshot being made, what the new active one is prepared on. */
  committed?: string;
  base?: string;
  source?: string;
  displayName?: string;
  rollbackTo?: number;
  parent?: string;
}

export function dataOpsDir(ctx: WorkspaceContext): string {
  return path.join(path.resolve(ctx.options.dataRoot), "data-ops");
}

export function journalPath(ctx: WorkspaceContext, botId: string): string {
  return path.join(dataOpsDir(ctx), `${validateBotId(botId)}.json`);
}

export function mountPath(ctx: WorkspaceContext, botId: string): string {
  return path.join(path.resolve(ctx.options.dataRoot), "mnt", validateBotId(botId));
}

export function backupsDir(ctx: WorkspaceContext): string {
  return path.join(path.resolve(ctx.options.dataRoot), "backups");
}

export function backupPath(ctx: WorkspaceContext, botId: string): string {
  return path.join(backupsDir(ctx), `${validateBotId(botId)}.tar.gz`);
}

/** Writes a file and its directory entry to disk (write, fsync, rename, fsync dir). */
export function writeDurable(file: string, content: string, mode = 0o600): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w", mode);
  try {
    fs.writeSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(dir);
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeJournal(ctx: WorkspaceContext, j: Journal): void {
  writeDurable(journalPath(ctx, j.botId), JSON.stringify(j));
}

export function readJournal(ctx: WorkspaceContext, botId: string): Journal | undefined {
  try {
    return JSON.parse(fs.readFileSync(journalPath(ctx, botId), "utf8")) as Journal;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    // An unreadable journal (cut short while written by another version): nothing to finish but the mount.
    return { op: "export", botId, containerId: "", startedAt: "" };
  }
}

/**
 * The journal of an import or restore of the bot that is left: its /data may be half
 * swapped, so its task must not run until repair.ts has finished the swap.
 */
export function unrepairedSwap(ctx: WorkspaceContext, botId: string): Journal | undefined {
  if (!fs.existsSync(journalPath(ctx, botId))) return undefined;
  const j = readJournal(ctx, botId);
  return j !== undefined && (j.op === "import" || j.op === "restore") ? j : undefined;
}

export function removeJournal(ctx: WorkspaceContext, botId: string): void {
  fs.rmSync(journalPath(ctx, botId), { force: true });
  try {
    fsyncDir(dataOpsDir(ctx));
  } catch {
    // the directory is gone: nothing to sync
  }
}

/** The container's rootfs snapshot key and snapshotter (only workspaces of ours: key = container id). */
export async function rootfsOf(ctx: WorkspaceContext, containerId: string): Promise<{ key: string; snapshotter: string }> {
  const info = await ctx.cd.containers.get(containerId);
  if (!info.snapshotKey) throw new WorkspaceError("conflict", `container ${containerId} has no rootfs snapshot`);
  return { key: info.snapshotKey, snapshotter: info.snapshotter || ctx.cd.snapshots.snapshotter };
}

/** Mounts the active snapshot `key` writable at `target` (its task must not be running). */
async function mountWritable(mounts: MountSpec[], target: string): Promise<void> {
  if (mounts.length !== 1) throw new WorkspaceError("internal", `a rootfs of ${mounts.length} mounts cannot be mounted on the host`);
  const m = mounts[0]!;
  fs.mkdirSync(target, { recursive: true, mode: 0o700 });
  const args =
    m.type === "bind" || m.type === "rbind"
      ? ["-o", [...new Set(["bind", ...m.options.filter((o) => o !== "ro")])].join(","), m.source, target]
      : ["-t", m.type, "-o", m.options.join(","), m.source || m.type, target];
  try {
    await run("mount", args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim() ?? describeError(err);
    throw new WorkspaceError("internal", `mount ${args.join(" ")} failed: ${stderr}`, { cause: err });
  }
}

export interface MountedRootfs {
  /** The rootfs on the host. */
  root: string;
  /** Its /data (may not exist yet). */
  data: string;
  release(): Promise<void>;
}

/**
 * The workspace's rootfs on the host, at `<dataRoot>/mnt/<bot>`: read-only (an overlay
 * without upper dir) or writable. Only while its task is not running.
 */
export async function mountRootfs(ctx: WorkspaceContext, botId: string, key: string, snapshotter: string, writable: boolean): Promise<MountedRootfs> {
  const target = mountPath(ctx, botId);
  await releaseMount(target);
  fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 });
  const mounts = await ctx.cd.snapshots.mounts(key, { snapshotter });
  if (writable) await mountWritable(mounts, target);
  else await mountReadOnly(mounts, target);
  return {
    root: target,
    data: path.join(target, DATA_DIR),
    release: () => releaseMount(target),
  };
}

/** Unmounts a rootfs mount left or made by a data operation and removes its directory. */
export async function releaseMount(target: string): Promise<void> {
  if (!fs.existsSync(target)) return;
  if (isMountPoint(target)) {
    // syncfs of what was written through it before it goes.
    await run("sync", ["-f", target]).catch(() => undefined);
    await unmount(target);
  }
  try {
    fs.rmdirSync(target);
  } catch {
    // gone already
  }
}

/** The data dir of a mounted rootfs must be a real directory (never a link out of it). */
export function checkDataDir(m: MountedRootfs, create: boolean): boolean {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(m.data);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (st === undefined) {
    if (!create) return false;
    fs.mkdirSync(m.data, { mode: 0o755 });
    return true;
  }
  if (!st.isDirectory()) throw new WorkspaceError("conflict", `/${DATA_DIR} of the workspace is not a directory`);
  return true;
}

/** Whether the workspace's task runs. */
export async function taskRunning(ctx: WorkspaceContext, containerId: string): Promise<boolean> {
  return (await ctx.cd.tasks.status(containerId))?.status === "running";
}

/**
 * Stops the task and removes its network without marking the row: a workspace meant to
 * run is started again when the operation ends (or by reconcile after a crash).
 */
export async function pauseTask(ctx: WorkspaceContext, botId: string, containerId: string): Promise<void> {
  ctx.bridges.evict(botId);
  await ctx.cd.tasks.stop(containerId, ctx.stopGraceMs);
  await ctx.removeNetwork(botId, containerId);
  fs.rmSync(path.join(ctx.socketDir(botId), "bridge.sock"), { force: true });
  await ctx.store.recordEvent(containerId, "paused", { botId, reason: "data operation" });
}

/**
 * Crash-recovery tests: MEMOH_CRASH_AT=<point> kills the orchestrator with SIGKILL when a
 * data operation reaches that point (version:committed, rollback:committed,
 * import:staged, import:out, import:in, preserve:verified, orphan_backup:verified).
 * Unset in production.
 */
export function crashPoint(point: string): void {
  if (process.env.MEMOH_CRASH_AT === point) process.kill(process.pid, "SIGKILL");
}
