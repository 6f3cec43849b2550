// Stopping a workspace's task: SIGTERM, the grace period, SIGKILL, delete the task,
// remove its network (and the bot's route: a legacy IP is free for others from then on)
// and the socket; the container (and its rootfs) stays. The row is
// marked "stopped", which tells reconcile and the supervisor to leave it stopped.
// Callers hold the bot's lock.
import fs from "node:fs";
import path from "node:path";
import type { WorkspaceContext } from "./context.js";

export async function stopTask(ctx: WorkspaceContext, botId: string, containerId: string, eventType: string, graceMs = ctx.stopGraceMs): Promise<void> {
  ctx.bridges.evict(botId);
  const exit = await ctx.cd.tasks.stop(containerId, graceMs);
  await ctx.removeNetwork(botId, containerId);
  fs.rmSync(path.join(ctx.socketDir(botId), "bridge.sock"), { force: true });
  await ctx.setStatus(containerId, "stopped", eventType, { exitStatus: exit?.exitStatus ?? null });
}
