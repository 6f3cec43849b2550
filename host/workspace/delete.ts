// Deleting a workspace: the row is marked "deleting" first, then the task, network,
// rootfs snapshot and then the container, the socket dir (its tmpfs unmounted) go, and the row last. A deletion cut
// short (the orchestrator died, containerd went away) is finished by the next delete,
// ensure or reconcile: a half-deleted workspace is never rebuilt, and calls to it
// answer not_found. Callers hold the bot's lock.
import type { WorkspaceContext } from "./context.js";
import { removeVersionSnapshots } from "../data/versions.js";
import { removeJournal } from "../data/workspace-fs.js";
import { removeSocketDir } from "./socket-dir.js";

export async function deleteWorkspace(ctx: WorkspaceContext, botId: string): Promise<void> {
  const resolved = await ctx.resolve(botId);
  ctx.bridges.evict(botId);
  ctx.routes.delete(botId);
  const marked = await ctx.store.getContainerByBot(botId);
  if (marked !== undefined && marked.status !== "deleted" && marked.status !== "deleting") {
    await ctx.store.setStatus(marked.containerId, "deleting", { type: "deleting", payload: { botId } });
  }
  if (marked !== undefined && marked.status !== "deleted") ctx.rowsDeleting.add(botId);
  const exists = await ctx.containerExists(resolved.containerId);
  if (exists) {
    await ctx.cd.tasks.stop(resolved.containerId, ctx.stopGraceMs);
    await ctx.network.removeNetwork(resolved.containerId);
    await ctx.cd.containers.delete(resolved.containerId, { removeSnapshot: true, ignoreNotFound: true });
  } else {
    await ctx.network.removeNetwork(resolved.containerId);
    // The rootfs of a container lost earlier (a GC root, so it is still there).
    await ctx.cd.snapshots.remove(resolved.containerId, { ignoreNotFound: true });
  }
  // Its versions (committed snapshots, GC roots of their own) go with it.
  await removeVersionSnapshots(ctx, botId);
  await removeSocketDir(ctx.socketDir(botId));
  const row = await ctx.store.getContainerByBot(botId);
  if (row !== undefined) {
    await ctx.store.recordEvent(row.containerId, "deleted", { botId, containerExisted: exists });
    await ctx.store.deleteContainer(row.containerId);
  } else {
    await ctx.store.recordEvent(resolved.containerId, "deleted", { botId, containerExisted: exists });
  }
  // Nothing of the workspace is left for a journal of it to repair.
  removeJournal(ctx, botId);
  ctx.rowsDeleting.delete(botId);
}

/** A deletion that was cut short is finished before anything else happens to the bot. */
export async function finishInterruptedDelete(ctx: WorkspaceContext, botId: string): Promise<boolean> {
  const row = await ctx.store.getContainerByBot(botId);
  if (row?.status !== "deleting") return false;
  ctx.rowsDeleting.add(botId);
  ctx.log(`${botId}: finishing the deletion of ${row.containerId} that was cut short`);
  await deleteWorkspace(ctx, botId);
  return true;
}
