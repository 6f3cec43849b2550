// Changing a workspace's limits: the running task's cgroup first (Tasks.Update, no
// restart), then the container's spec (so the next task of it gets them), then the
// row (so a rebuild gets them). A live update the kernel refuses (memory below what the
// workspace uses now) fails before anything is recorded. Callers hold the bot's lock.
import { linuxResources } from "../containerd/spec.js";
import { swapLimitSupported } from "../containerd/cgroups.js";
import type { WorkspaceContext } from "./context.js";
import { withWorkspaceLimits } from "./container-spec.js";
import { WorkspaceError, describeError } from "./errors.js";
import { applyLimitsChange, type LimitsChange, type WorkspaceLimits } from "./limits.js";

export async function updateLimits(ctx: WorkspaceContext, botId: string, change: LimitsChange): Promise<WorkspaceLimits> {
  const row = await ctx.liveRow(botId);
  if (row === undefined || row.status === "deleting") throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
  const current = row.limits ?? ctx.defaultLimits;
  const next = applyLimitsChange(current, change);
  const info = await ctx.cd.containers.get(row.containerId);
  if (info.spec === undefined) throw new WorkspaceError("internal", `container ${row.containerId} has no spec`);
  const task = await ctx.cd.tasks.status(row.containerId);
  const live = task?.status === "running" || task?.status === "paused" || task?.status === "created";
  if (live) {
    try {
      await ctx.cd.tasks.update(row.containerId, linuxResources(next, { limitSwap: swapLimitSupported() }));
    } catch (err) {
      throw new WorkspaceError("conflict", `the running workspace ${row.containerId} refused the new limits (${describeError(err)}); nothing was changed`, { cause: err });
    }
  }
  const spec = structuredClone(info.spec);
  withWorkspaceLimits(next)(spec);
  try {
    await ctx.cd.containers.update(row.containerId, { spec });
    await ctx.store.setLimits(row.containerId, next, { payload: { botId, live } });
  } catch (err) {
    // Put the running task back to what the spec and the row still say.
    if (live) {
      await ctx.cd.tasks
        .update(row.containerId, linuxResources(current, { limitSwap: swapLimitSupported() }))
        .catch((e: unknown) => ctx.log(`${row.containerId}: cannot restore its limits after a failed update: ${describeError(e)}`));
    }
    throw err;
  }
  return next;
}
