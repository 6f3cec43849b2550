// Bringing a workspace's agent back: after a call found it UNAVAILABLE (revive), or
// after the watchdog found it deaf (replaceTask). Callers hold the bot's lock. Like
// every start, a revive first finishes a data operation that was cut short (repair.ts):
// after the orchestrator died during an import, the first call finds the task stopped
// with /data half swapped.
import { repairDataOp } from "../data/repair.js";
import type { WorkspaceContext } from "./context.js";
import { WorkspaceError } from "./errors.js";
import { probeBridgeWithin, startTask } from "./start.js";

/** After UNAVAILABLE from the bridge: restart the task unless someone else already did. */
export async function reviveAgent(ctx: WorkspaceContext, botId: string): Promise<"restarted" | "already_running"> {
  const resolved = await ctx.resolve(botId);
  if (!(await ctx.containerExists(resolved.containerId))) {
    throw new WorkspaceError("not_found", `bot ${botId} has no workspace container (${resolved.containerId})`);
  }
  const row = await ctx.store.getContainerByBot(botId);
  if (row?.status === "stopped") throw new WorkspaceError("conflict", `workspace ${resolved.containerId} is stopped; start it first`);
  if (row?.status === "deleting") throw new WorkspaceError("not_found", `workspace ${resolved.containerId} is being deleted`);
  // Before the task is looked at: a repair stops what it finds of the task.
  await repairDataOp(ctx, botId);
  const task = await ctx.cd.tasks.status(resolved.containerId);
  if (task?.status === "running") {
    try {
      await probeBridgeWithin(ctx, botId, 2_000);
      return "already_running"; // restarted meanwhile by another caller
    } catch {
      // running but deaf: restart below
    }
  }
  await ctx.store.recordEvent(resolved.containerId, "agent_unavailable", { botId, task: task?.status ?? "none", pid: task?.pid ?? null });
  if (task !== undefined) await replaceTask(ctx, botId, resolved.containerId);
  else await startTask(ctx, botId, resolved.containerId);
  return "restarted";
}

/** A task that is there but useless: stop it (with grace) and its network, then start anew. */
export async function replaceTask(ctx: WorkspaceContext, botId: string, containerId: string): Promise<void> {
  await ctx.cd.tasks.stop(containerId, ctx.stopGraceMs);
  await ctx.removeNetwork(botId, containerId);
  await startTask(ctx, botId, containerId);
}
