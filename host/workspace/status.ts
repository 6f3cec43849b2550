// What a workspace is right now: its row plus what containerd says (container, task),
// the bridge route, and whether data outlives the container.
import { readCgroupStats, type CgroupStats } from "../containerd/cgroups.js";
import type { ContainerRow } from "../store/types.js";
import type { WorkspaceLimits } from "./limits.js";
import { isLegacyContainerId } from "./botid.js";
import { targetAddress } from "./bridge-source.js";
import type { WorkspaceContext } from "./context.js";
import { hasBackup } from "../data/preserve.js";

export interface WorkspaceStatus {
  botId: string;
  containerId: string;
  row: ContainerRow | undefined;
  containerExists: boolean;
  /** containerd's task status, or "none". */
  task: "none" | "created" | "running" | "stopped" | "paused" | "pausing" | "unknown";
  pid: number | undefined;
  legacy: boolean;
  /** The bridge address the manager uses for this bot. */
  bridge: string;
  ip: string | undefined;
  /** Data outlives the container: recorded snapshots, or an orphaned active snapshot of a missing container. */
  hasPreservedData: boolean;
  /** The limits in force (the row's, or the defaults for a row from before limits); undefined without a row. */
  limits: WorkspaceLimits | undefined;
  /** OOM kills recorded over the workspace's life (they survive restarts). */
  oomKills: number;
  lastOomAt: Date | undefined;
  /** The running task's cgroup now: memory use and limit, OOM kills since the task started, pids. */
  cgroup: CgroupStats | undefined;
}

/** The task's cgroup (containerd's default path /<namespace>/<id>); undefined when it cannot be read. */
async function liveCgroup(ctx: WorkspaceContext, containerId: string, running: boolean): Promise<CgroupStats | undefined> {
  if (!running) return undefined;
  try {
    return await readCgroupStats(`/${ctx.cd.namespace}/${containerId}`);
  } catch {
    return undefined;
  }
}

function rowFacts(ctx: WorkspaceContext, row: ContainerRow | undefined): Pick<WorkspaceStatus, "limits" | "oomKills" | "lastOomAt"> {
  return { limits: row ? (row.limits ?? ctx.defaultLimits) : undefined, oomKills: row?.oomKills ?? 0, lastOomAt: row?.lastOomAt };
}

export async function workspaceStatus(ctx: WorkspaceContext, botId: string): Promise<WorkspaceStatus> {
  const resolved = await ctx.resolve(botId);
  const row = await ctx.store.getContainerByBot(botId);
  const exists = await ctx.containerExists(resolved.containerId);
  const task = exists ? await ctx.cd.tasks.status(resolved.containerId) : undefined;
  const route = ctx.routes.get(botId);
  const hasPreservedData = hasBackup(ctx, botId) || (!exists && (await ctx.cd.snapshots.exists(resolved.containerId)));
  const live = row?.status === "deleted" ? undefined : row;
  return {
    ...rowFacts(ctx, live),
    cgroup: await liveCgroup(ctx, resolved.containerId, task?.status === "running"),
    hasPreservedData,
    botId,
    containerId: resolved.containerId,
    row: live,
    containerExists: exists,
    task: task?.status ?? "none",
    pid: task?.pid,
    legacy: resolved.legacy,
    bridge: route ? targetAddress(route) : `unix:${ctx.socketPath(botId)}`,
    ip: resolved.legacy ? ctx.network.cachedAttachment(resolved.containerId)?.ip : undefined,
  };
}

/** Every workspace the database knows, with live task state. */
export async function listWorkspaces(ctx: WorkspaceContext): Promise<WorkspaceStatus[]> {
  const rows = await ctx.store.listContainers();
  const tasks = new Map((await ctx.cd.tasks.list()).map((t) => [t.id, t]));
  const containers = new Set((await ctx.cd.containers.list()).map((c) => c.id));
  const snapshots = new Set((await ctx.cd.snapshots.list()).map((s) => s.name));
  return rows
    .filter((r) => r.status !== "deleted")
    .map((row) => {
      const task = tasks.get(row.containerId);
      const legacy = isLegacyContainerId(row.containerId);
      const route = ctx.routes.get(row.botId);
      return {
        ...rowFacts(ctx, row),
        // Live cgroup counters are read per workspace (status), not for the whole list.
        cgroup: undefined,
        botId: row.botId,
        containerId: row.containerId,
        row,
        containerExists: containers.has(row.containerId),
        task: task?.status ?? "none",
        pid: task?.pid,
        legacy,
        bridge: route ? targetAddress(route) : `unix:${ctx.socketPath(row.botId)}`,
        ip: legacy ? ctx.network.cachedAttachment(row.containerId)?.ip : undefined,
        hasPreservedData: hasBackup(ctx, row.botId) || (!containers.has(row.containerId) && snapshots.has(row.containerId)),
      };
    });
}
