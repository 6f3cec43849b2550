// Reconcile: make containerd and the network match the rows. Runs at startup, on
// SIGHUP and after the supervisor lost containerd's event stream.
//
// Every decision about a bot is taken under its lock from state read under that lock:
// the list of rows only says whom to visit. A delete or stop that finished while the
// sweep waited for the lock is seen as it is (gone, stopped), never undone.
// Network hygiene follows the same rule: it releases only what belongs to containers
// that have no live row and no running task, checked again under the bot's lock, so a
// workspace between CNI ADD and task start keeps its address.
import fs from "node:fs";
import type { ContainerRow } from "../store/types.js";
import { botIdProblem, isLegacyContainerId, LEGACY_PREFIX, WORKSPACE_PREFIX, workspaceContainerId } from "./botid.js";
import type { WorkspaceContext } from "./context.js";
import { createContainer, protectRootfs } from "./create.js";
import { finishInterruptedDelete } from "./delete.js";
import { describeError } from "./errors.js";
import { ensureNetworkOfRunning, startTask, waitForBridgeOrFail } from "./start.js";
import { repairDataOp } from "../data/repair.js";
import { journalPath } from "../data/workspace-fs.js";
import { backupOrphan } from "../data/preserve.js";

export type ReconcileAction = "rebuilt" | "started" | "healthy" | "renetworked" | "stopped" | "deleted" | "repaired" | "skipped" | "failed";

export interface ReconcileEntry {
  botId: string;
  containerId: string;
  action: ReconcileAction;
  error?: string;
}

/**
 * Over the rows with auto_start: a missing container is rebuilt, a task that is not
 * running is started (a workspace stopped on purpose stays stopped), a running one gets
 * its network re-applied and counts as healthy only when its bridge answers. A row left
 * "deleting" (any auto_start) has its deletion finished. A data operation cut short is
 * repaired whatever the row's auto_start (without auto_start nothing is started: such a
 * workspace reports "repaired"), so no journal waits for whoever starts it next. Errors
 * are per bot (reported, and the row marked "error"), the sweep goes on.
 */
export async function reconcile(ctx: WorkspaceContext, opts: { signal?: AbortSignal } = {}): Promise<ReconcileEntry[]> {
  const rows = await ctx.store.listContainers();
  await networkHygiene(ctx, rows, opts.signal);
  const entries: ReconcileEntry[] = [];
  for (const listed of rows) {
    if (listed.status === "deleted") continue;
    const problem = botIdProblem(listed.botId);
    const repairOnly = !listed.autoStart && listed.status !== "deleting";
    // Without auto_start: visited only when a data operation of it was cut short.
    if (repairOnly && (problem !== undefined || !fs.existsSync(journalPath(ctx, listed.botId)))) continue;
    if (problem !== undefined) {
      entries.push({ botId: listed.botId, containerId: listed.containerId, action: "skipped", error: `invalid bot id: ${problem}` });
      continue;
    }
    try {
      const action = await ctx.locked(listed.botId, opts.signal, () => (repairOnly ? repairOne(ctx, listed.botId) : reconcileOne(ctx, listed.botId)));
      entries.push({ botId: listed.botId, containerId: listed.containerId, action });
    } catch (err) {
      ctx.log(`reconcile ${listed.botId}: ${describeError(err)}`);
      entries.push({ botId: listed.botId, containerId: listed.containerId, action: "failed", error: describeError(err) });
      // Keep the row honest; a start failure already did this, a failed rebuild or lookup did not.
      const now = await ctx.store.getContainerByBot(listed.botId).catch(() => undefined);
      // A deletion that failed again stays "deleting": it is finished later, never rebuilt.
      if (now !== undefined && now.status !== "error" && now.status !== "deleting" && now.status !== "deleted" && now.status !== "stopped") {
        await ctx.store
          .setStatus(now.containerId, "error", { type: "reconcile_failed", payload: { error: describeError(err) } })
          .catch((e: unknown) => ctx.log(`reconcile ${listed.botId}: cannot record the failure: ${describeError(e)}`));
      }
    }
  }
  return entries;
}

/** A bot without auto_start, under its lock: only its data operation cut short is finished. */
async function repairOne(ctx: WorkspaceContext, botId: string): Promise<ReconcileAction> {
  if (await finishInterruptedDelete(ctx, botId)) return "deleted";
  return (await repairDataOp(ctx, botId)) === undefined ? "skipped" : "repaired";
}

/** One bot, under its lock, from its row as it is now. */
async function reconcileOne(ctx: WorkspaceContext, botId: string): Promise<ReconcileAction> {
  if (await finishInterruptedDelete(ctx, botId)) return "deleted";
  // A data operation cut short (import, version, rollback…) is finished before the workspace starts.
  await repairDataOp(ctx, botId);
  const row = await ctx.liveRow(botId);
  // Deleted (or switched off) while the sweep waited for the lock.
  if (row === undefined || !row.autoStart) return "skipped";
  const containerId = row.containerId;
  if (!(await ctx.containerExists(containerId))) return rebuild(ctx, row);
  await protectRootfs(ctx, containerId);
  const task = await ctx.cd.tasks.status(containerId);
  if (task?.status !== "running") {
    // Stopped on purpose (stop()): it stays stopped until started again.
    if (row.status === "stopped") return "stopped";
    await startTask(ctx, botId, containerId);
    return "started";
  }
  const net = await ensureNetworkOfRunning(ctx, botId, containerId, task.pid);
  await waitForBridgeOrFail(ctx, botId, containerId);
  const fresh = await ctx.store.getContainer(containerId);
  if (fresh?.status !== "running") await ctx.setStatus(containerId, "running", "reconciled", { pid: task.pid, network: net });
  return net === "renetworked" ? "renetworked" : "healthy";
}

async function rebuild(ctx: WorkspaceContext, row: ContainerRow): Promise<ReconcileAction> {
  const { botId, containerId } = row;
  await ctx.store.recordEvent(containerId, "rebuild", { botId, reason: "container missing" });
  if (isLegacyContainerId(containerId)) {
    // A legacy container is not re-created as legacy: the bot gets a current workspace.
    ctx.routes.delete(botId);
  }
  // A lost legacy container's rootfs (with its /data) carries over into the new workspace.
  const legacyRootfs = isLegacyContainerId(containerId) && (await ctx.cd.snapshots.isActive(containerId)) ? containerId : undefined;
  // The rootfs a lost container left (with /data) is backed up before anything is built on it.
  if (legacyRootfs === undefined) await backupOrphan(ctx, botId);
  await createContainer(ctx, botId, { image: row.image, autoStart: row.autoStart, cdiDevices: row.cdiDevices }, legacyRootfs);
  if (row.status === "stopped") await ctx.setStatus(workspaceContainerId(botId), "stopped", "rebuilt_stopped");
  else await startTask(ctx, botId, workspaceContainerId(botId));
  return "rebuilt";
}

/** The bot a workspace container id belongs to, when it is one of ours. */
export function botOfContainer(containerId: string): string | undefined {
  for (const prefix of [WORKSPACE_PREFIX, LEGACY_PREFIX]) {
    if (containerId.startsWith(prefix)) {
      const bot = containerId.slice(prefix.length);
      if (botIdProblem(bot) === undefined) return bot;
    }
  }
  return undefined;
}

/**
 * Releases the network of containers that have no live row and no running task. Each
 * candidate is checked again under its bot's lock (a create or start may have begun
 * since the rows were listed), then released. Failures are logged, not thrown.
 */
async function networkHygiene(ctx: WorkspaceContext, rows: ContainerRow[], signal: AbortSignal | undefined): Promise<void> {
  const errors: string[] = [];
  const keep = new Set(rows.filter((r) => r.status !== "deleted").map((r) => r.containerId));
  for (const t of await ctx.cd.tasks.list()) if (t.status === "running") keep.add(t.id);
  for (const id of await ctx.network.attachedContainerIds(errors)) {
    if (keep.has(id)) continue;
    const bot = botOfContainer(id);
    const release = async () => {
      const row = await ctx.store.getContainer(id);
      if (row !== undefined && row.status !== "deleted") return;
      if ((await ctx.cd.tasks.status(id))?.status === "running") return;
      if (bot !== undefined) ctx.routes.delete(bot);
      await ctx.network.releaseContainer(id);
      ctx.log(`network hygiene: released what ${id} held (no workspace row, no running task)`);
    };
    try {
      if (bot !== undefined) await ctx.locked(bot, signal, release);
      else await release();
    } catch (err) {
      errors.push(`${id}: ${describeError(err)}`);
    }
  }
  try {
    await ctx.network.repairBridge();
    await ctx.network.sweepOrphanedFirewallRules();
  } catch (err) {
    errors.push(describeError(err));
  }
  // The host and metadata guards as configured: restored after a flush of the host's rules,
  // removed after their switch was turned off, even while no workspace is being set up.
  try {
    if (await ctx.network.syncGuards()) ctx.log("network hygiene: the host/metadata guards were brought in line with the configuration");
  } catch (err) {
    errors.push(`guards: ${describeError(err)}`);
  }
  for (const e of errors) ctx.log(`network hygiene: ${e}`);
}
