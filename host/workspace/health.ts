// Keeping running workspaces alive: what the supervisor (supervisor.ts) asks of the
// manager. Candidates are picked without the lock (a cheap read); every decision is
// taken under the bot's lock from the row and the live task read again there, so a
// stop or delete that got in first is never undone. Like every start, a restart first
// finishes a data operation that was cut short (repair.ts).
import type { WorkspaceContext } from "./context.js";
import { lockKey } from "./context.js";
import { probeBridgeWithin, startTask } from "./start.js";
import { replaceTask } from "./revive.js";
import { repairDataOp } from "../data/repair.js";

/** Bots whose workspace should be running (row "running"): what the supervisor probes. */
export async function botsMeantToRun(ctx: WorkspaceContext): Promise<string[]> {
  return (await ctx.store.listContainers({ status: "running" })).map((r) => r.botId);
}

/**
 * Containers whose row says "running" while containerd has no running task for them:
 * an exit the event stream did not deliver. The supervisor restarts them (or marks them
 * "error" after the crash-loop limit), like any other exit.
 */
export async function deadButMeantToRun(ctx: WorkspaceContext): Promise<string[]> {
  const rows = await ctx.store.listContainers({ status: "running" });
  if (rows.length === 0) return [];
  const running = new Set((await ctx.cd.tasks.list()).filter((t) => t.status === "running").map((t) => t.id));
  return rows.filter((r) => !running.has(r.containerId) && !ctx.lock.isBusy(lockKey(r.botId))).map((r) => r.containerId);
}

/**
 * Liveness probe of a workspace that should be running: its agent answers Info within
 * `timeoutMs` through the pool. "skipped" when it is not meant to be running or a state
 * change of it is under way.
 */
export async function probe(ctx: WorkspaceContext, botId: string, timeoutMs: number): Promise<"ok" | "unresponsive" | "skipped"> {
  if (ctx.lock.isBusy(lockKey(botId))) return "skipped";
  const row = await ctx.store.getContainerByBot(botId);
  if (row?.status !== "running") return "skipped";
  if ((await ctx.cd.tasks.status(row.containerId))?.status !== "running") return "skipped";
  try {
    const client = await ctx.bridges.get(botId);
    await client.info({ timeoutMs });
    return "ok";
  } catch {
    return "unresponsive";
  }
}

/**
 * Restarts a running workspace whose agent stopped answering (a hung event loop, a
 * stopped process), unless it answers within `timeoutMs` now. Under the bot's lock.
 */
export async function restartUnresponsive(ctx: WorkspaceContext, botId: string, timeoutMs: number): Promise<"restarted" | "ignored"> {
  const row = await ctx.store.getContainerByBot(botId);
  if (row?.status !== "running") return "ignored";
  const task = await ctx.cd.tasks.status(row.containerId);
  if (task?.status !== "running") return "ignored";
  try {
    await probeBridgeWithin(ctx, botId, timeoutMs);
    return "ignored";
  } catch {
    // still deaf: restart below
  }
  await ctx.store.recordEvent(row.containerId, "agent_unresponsive", { botId, pid: task.pid });
  ctx.bridges.evict(botId);
  // A data operation cut short is finished before the workspace runs again (repair.ts).
  await repairDataOp(ctx, botId);
  await replaceTask(ctx, botId, row.containerId);
  return "restarted";
}

/**
 * The init process of `containerId`'s task exited (a TaskExit event, or the watchdog saw
 * the task gone). A workspace that should be running (its row says "running": a stop or
 * delete of ours marks the row first, under the same lock) and whose task is not running
 * again already is restarted. Under the bot's lock.
 */
export async function restartAfterExit(ctx: WorkspaceContext, botId: string, containerId: string, exit: { exitStatus: number }): Promise<"restarted" | "ignored"> {
  const row = await ctx.store.getContainerByBot(botId);
  if (row === undefined || row.containerId !== containerId || row.status !== "running") return "ignored";
  if ((await ctx.cd.tasks.status(containerId))?.status === "running") return "ignored";
  await ctx.store.recordEvent(containerId, "task_exited", { botId, exitStatus: exit.exitStatus });
  ctx.bridges.evict(botId);
  // A failed restart leaves the row "running": the supervisor tries again (the task it
  // removed sends an exit, and its watchdog sees the task gone) until its crash-loop
  // limit marks the workspace failed. A failed repair is such a failure: the task is
  // never started on a /data that a data operation cut short left half done (the
  // orchestrator died during an import: its task stopped, its row still "running").
  await repairDataOp(ctx, botId);
  await startTask(ctx, botId, containerId, { markErrorOnFailure: false });
  return "restarted";
}

/** Marks the workspace "error" (the supervisor gave up restarting it), if it still should be running. Under the bot's lock. */
export async function markFailed(ctx: WorkspaceContext, containerId: string, type: string, payload: Record<string, unknown>): Promise<void> {
  const row = await ctx.store.getContainer(containerId);
  if (row?.status === "running") await ctx.store.setStatus(containerId, "error", { type, payload });
}

/** Counts an OOM kill on the row of `containerId`; false when the container is not a workspace we know. */
export async function recordOom(ctx: WorkspaceContext, containerId: string): Promise<boolean> {
  const row = await ctx.store.getContainer(containerId);
  if (row === undefined || row.status === "deleted") return false;
  await ctx.store.recordOom(containerId, { botId: row.botId });
  return true;
}
