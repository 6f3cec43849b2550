// Versions of a workspace's rootfs (with its /data): committed containerd snapshots.
//
// Create: pause the task → commit the active rootfs `workspace-<bot>` as
// `workspace-<bot>@<id>` (a GC root, labelled with the bot) → prepare a new active
// `workspace-<bot>` on top of it (the container keeps pointing at the same key, so it now
// runs on the new one) → record the `snapshots` row, the `container_versions` row
// (max + 1) and a lifecycle event in one transaction → start the task (and its network)
// again when it ran.
// Rollback to N: the same, except that the new active snapshot is prepared on version N's
// snapshot; the state left behind is saved first as a version of source `rollback`, so a
// rollback can itself be rolled back.
// Delete: the version row goes; its snapshot is removed as soon as nothing depends on it
// (containerd refuses to remove a snapshot with children; pruneSnapshots retries after
// every version change).
//
// A crash in the middle leaves the journal (workspace-fs.ts) naming the committed
// snapshot and what the active one is prepared on: finishVersionOp() completes it (the
// state after) when the commit happened, and otherwise nothing changed (the state before).
import { randomBytes } from "node:crypto";
import { isNotFound, ContainerdError } from "../containerd/errors.js";
import { labelFilter } from "../containerd/containers.js";
import { GC_ROOT_LABEL } from "../containerd/snapshots.js";
import type { WorkspaceContext } from "../workspace/context.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { LABEL_BOT_ID } from "../workspace/resolve.js";
import { startTask } from "../workspace/start.js";
import type { ContainerVersionRow, SnapshotRow } from "../store/types.js";
import { crashPoint, pauseTask, readJournal, removeJournal, rootfsOf, taskRunning, writeJournal, type Journal } from "./workspace-fs.js";

/** On committed version snapshots: the bot they belong to. */
export const VERSION_LABEL = "memoh.version_of";

export type VersionSource = "manual" | "rollback" | "pre_exec";
export const VERSION_SOURCES: readonly VersionSource[] = ["manual", "rollback", "pre_exec"];

export interface VersionInfo {
  version: number;
  displayName: string;
  source: string;
  snapshot: string;
  parent: string | null;
  createdAt: Date;
}

export interface VersionList {
  versions: VersionInfo[];
  /** The versions the running rootfs descends from, nearest first. */
  lineage: number[];
}

async function requireWorkspace(ctx: WorkspaceContext, botId: string): Promise<{ containerId: string; key: string; snapshotter: string }> {
  const row = await ctx.liveRow(botId);
  if (row === undefined || !(await ctx.containerExists(row.containerId))) throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
  const { key, snapshotter } = await rootfsOf(ctx, row.containerId);
  return { containerId: row.containerId, key, snapshotter };
}

function versionName(containerId: string): string {
  return `${containerId}@${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

function join(versions: ContainerVersionRow[], snapshots: SnapshotRow[]): VersionInfo[] {
  const byId = new Map(snapshots.map((s) => [s.id, s]));
  return versions.flatMap((v) => {
    const s = byId.get(v.snapshotId);
    return s ? [{ version: v.version, displayName: s.displayName, source: s.source, snapshot: s.runtimeSnapshotName, parent: s.parent, createdAt: v.createdAt }] : [];
  });
}

/**
 * Commits the active rootfs as a new version and prepares a new active one on `base`
 * (the commit itself for create, an older version for rollback). Callers hold the lock.
 */
async function commitAndPrepare(
  ctx: WorkspaceContext,
  botId: string,
  ws: { containerId: string; key: string; snapshotter: string },
  j: Omit<Journal, "botId" | "containerId" | "startedAt" | "committed" | "base"> & { base?: string },
): Promise<VersionInfo> {
  const committed = versionName(ws.containerId);
  const parent = (await ctx.cd.snapshots.stat(ws.key, { snapshotter: ws.snapshotter })).parent || undefined;
  const journal: Journal = {
    ...j,
    botId,
    containerId: ws.containerId,
    startedAt: new Date().toISOString(),
    committed,
    base: j.base ?? committed,
    ...(parent !== undefined ? { parent } : {}),
  };
  writeJournal(ctx, journal);
  const wasRunning = await taskRunning(ctx, ws.containerId);
  if (wasRunning) await pauseTask(ctx, botId, ws.containerId);
  else await ctx.cd.tasks.stop(ws.containerId, 0);
  let failure: unknown;
  try {
    await ctx.cd.snapshots.commit(committed, ws.key, { snapshotter: ws.snapshotter, labels: { [LABEL_BOT_ID]: botId, [VERSION_LABEL]: botId } });
  } catch (err) {
    failure = err;
  }
  // Prepare on base and record the rows (also what a restart after a crash does).
  if (failure === undefined) crashPoint(`${j.op}:committed`);
  if (failure === undefined) {
    try {
      await finishVersionOp(ctx, journal);
    } catch (err) {
      failure = err;
    }
  }
  // A commit that happened keeps its journal when what followed failed: the next repair
  // completes it (recording missing rows does not stop the task started again below).
  if (failure === undefined || !(await ctx.cd.snapshots.exists(committed, { snapshotter: ws.snapshotter }).catch(() => true))) removeJournal(ctx, botId);
  if (wasRunning) {
    try {
      await startTask(ctx, botId, ws.containerId);
    } catch (err) {
      if (failure === undefined) failure = err;
      else ctx.log(`${botId}: starting again after a failed ${j.op}: ${describeError(err)}`);
    }
  }
  if (failure !== undefined) throw failure;
  const rows = await ctx.store.listSnapshots(ws.containerId);
  const info = join(await ctx.store.listVersions(ws.containerId), rows).find((v) => v.snapshot === committed);
  if (info === undefined) throw new WorkspaceError("internal", `version ${committed} was committed but is not recorded`);
  await pruneSnapshots(ctx, ws.containerId, ws.snapshotter);
  return info;
}

/**
 * Completes a version create or rollback whose commit happened: the active rootfs is
 * prepared on the journal's base when it is missing, and the committed snapshot gets its
 * rows when it has none. Returns "before" when the commit never happened.
 * `beforePrepare` runs only when the active rootfs has to be prepared (a repair stops a
 * task there: it would be running on the committed snapshot); recording rows leaves the
 * task alone.
 */
export async function finishVersionOp(ctx: WorkspaceContext, j: Journal, opts: { beforePrepare?: () => Promise<unknown> } = {}): Promise<"before" | "after"> {
  if (j.committed === undefined || j.base === undefined) return "before";
  const info = await ctx.cd.containers.get(j.containerId).catch((err: unknown) => {
    if (isNotFound(err)) return undefined;
    throw err;
  });
  const key = info?.snapshotKey || j.containerId;
  const snapshotter = info?.snapshotter || ctx.cd.snapshots.snapshotter;
  if (!(await ctx.cd.snapshots.exists(j.committed, { snapshotter }))) return "before";
  if (!(await ctx.cd.snapshots.exists(key, { snapshotter }))) {
    await opts.beforePrepare?.();
    await ctx.cd.snapshots.prepare(key, j.base, { snapshotter, labels: { [GC_ROOT_LABEL]: new Date().toISOString(), [LABEL_BOT_ID]: j.botId } });
  }
  const recorded = (await ctx.store.listSnapshots(j.containerId)).some((s) => s.runtimeSnapshotName === j.committed);
  if (!recorded) {
    await ctx.store.recordVersion({
      containerId: j.containerId,
      runtimeSnapshotName: j.committed,
      displayName: j.displayName ?? "",
      parent: j.parent ?? null,
      snapshotter,
      source: j.source ?? "manual",
      eventType: j.op === "rollback" ? "rolled_back" : "version_created",
      eventPayload: { botId: j.botId, ...(j.rollbackTo !== undefined ? { rolledBackTo: j.rollbackTo } : {}) },
    });
  }
  return "after";
}

/** A new version of the bot's rootfs. Callers hold the lock. */
export async function createVersion(ctx: WorkspaceContext, botId: string, opts: { displayName?: string; source?: VersionSource } = {}): Promise<VersionInfo> {
  const ws = await requireWorkspace(ctx, botId);
  return commitAndPrepare(ctx, botId, ws, { op: "version", source: opts.source ?? "manual", displayName: opts.displayName ?? "" });
}

/** Rolls the rootfs back to version `version`, saving the current state first as a version of source `rollback`. */
export async function rollbackTo(ctx: WorkspaceContext, botId: string, version: number): Promise<{ saved: VersionInfo; to: VersionInfo }> {
  const ws = await requireWorkspace(ctx, botId);
  const versions = join(await ctx.store.listVersions(ws.containerId), await ctx.store.listSnapshots(ws.containerId));
  const target = versions.find((v) => v.version === version);
  if (target === undefined) throw new WorkspaceError("not_found", `bot ${botId} has no version ${version}`);
  if (!(await ctx.cd.snapshots.exists(target.snapshot, { snapshotter: ws.snapshotter }))) {
    throw new WorkspaceError("conflict", `the snapshot ${target.snapshot} of version ${version} is gone`);
  }
  const saved = await commitAndPrepare(ctx, botId, ws, {
    op: "rollback",
    source: "rollback",
    displayName: `before rollback to v${version}`,
    base: target.snapshot,
    rollbackTo: version,
  });
  return { saved, to: target };
}

/** The bot's versions and the lineage of its current rootfs. */
export async function listVersions(ctx: WorkspaceContext, botId: string): Promise<VersionList> {
  const ws = await requireWorkspace(ctx, botId);
  const versions = join(await ctx.store.listVersions(ws.containerId), await ctx.store.listSnapshots(ws.containerId));
  const byName = new Map(versions.map((v) => [v.snapshot, v]));
  const allRows = new Map((await ctx.store.listSnapshots(ws.containerId)).map((s) => [s.runtimeSnapshotName, s]));
  const lineage: number[] = [];
  let name = (await ctx.cd.snapshots.stat(ws.key, { snapshotter: ws.snapshotter })).parent;
  for (let i = 0; i < 10_000 && name && allRows.has(name); i++) {
    const v = byName.get(name);
    if (v !== undefined) lineage.push(v.version);
    name = allRows.get(name)!.parent ?? "";
  }
  return { versions, lineage };
}

/** Deletes version `version`; its snapshot goes as soon as nothing depends on it. */
export async function deleteVersion(ctx: WorkspaceContext, botId: string, version: number): Promise<{ snapshotRemoved: boolean }> {
  const ws = await requireWorkspace(ctx, botId);
  const snap = await ctx.store.removeVersion(ws.containerId, version, { type: "version_deleted", payload: { botId } });
  if (snap === undefined) throw new WorkspaceError("not_found", `bot ${botId} has no version ${version}`);
  const removed = await pruneSnapshots(ctx, ws.containerId, ws.snapshotter);
  return { snapshotRemoved: removed.includes(snap.runtimeSnapshotName) };
}

/**
 * Removes the snapshots of `containerId` that no version names and nothing depends on
 * (containerd refuses a snapshot with children: it stays until they are gone).
 */
export async function pruneSnapshots(ctx: WorkspaceContext, containerId: string, snapshotter: string): Promise<string[]> {
  const removed: string[] = [];
  for (let progress = true; progress; ) {
    progress = false;
    const versioned = new Set((await ctx.store.listVersions(containerId)).map((v) => v.snapshotId));
    for (const s of await ctx.store.listSnapshots(containerId)) {
      if (versioned.has(s.id)) continue;
      try {
        await ctx.cd.snapshots.remove(s.runtimeSnapshotName, { snapshotter: s.snapshotter || snapshotter, ignoreNotFound: true });
      } catch (err) {
        if (err instanceof ContainerdError && err.code === "failed_precondition") continue;
        throw err;
      }
      await ctx.store.deleteSnapshot(s.id);
      removed.push(s.runtimeSnapshotName);
      progress = true;
    }
  }
  return removed;
}

/** Removes every version snapshot of the bot (children first): a deleted workspace leaves none. */
export async function removeVersionSnapshots(ctx: WorkspaceContext, botId: string): Promise<void> {
  for (let round = 0; round < 1000; round++) {
    const left = await ctx.cd.snapshots.list([labelFilter(VERSION_LABEL, botId)]);
    if (left.length === 0) return;
    const parents = new Set(left.map((s) => s.parent));
    let progress = false;
    for (const s of left) {
      if (parents.has(s.name)) continue;
      try {
        await ctx.cd.snapshots.remove(s.name, { ignoreNotFound: true });
        progress = true;
      } catch (err) {
        if (err instanceof ContainerdError && err.code === "failed_precondition") continue;
        throw err;
      }
    }
    if (!progress) {
      ctx.log(`${botId}: version snapshots still in use: ${left.map((s) => s.name).join(", ")}`);
      return;
    }
  }
}

/** Whether a version operation of the bot was cut short (its journal is left). */
export function pendingVersionOp(ctx: WorkspaceContext, botId: string): Journal | undefined {
  const j = readJournal(ctx, botId);
  return j !== undefined && (j.op === "version" || j.op === "rollback") ? j : undefined;
}
