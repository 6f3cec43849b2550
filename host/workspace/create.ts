// Creating a workspace's container: pull the image (by policy, with progress), create
// `workspace-<bot>` on its own rootfs snapshot (a GC root, so the bot's /data outlives a
// container lost behind our back), record the row. No task yet: start.ts does that.
// Callers hold the bot's lock.
import fs from "node:fs";
import { pullImage } from "../containerd/pull.js";
import { CdiError, CdiRegistry } from "../containerd/cdi.js";
import { GC_ROOT_LABEL } from "../containerd/snapshots.js";
import { LEGACY_BRIDGE_PORT } from "../../proto/constants.js";
import { isLegacyContainerId, workspaceContainerId } from "./botid.js";
import { workspaceSpecOpts } from "./container-spec.js";
import type { WorkspaceContext } from "./context.js";
import { WorkspaceError, describeError } from "./errors.js";
import { LABEL_BOT_ID, LABEL_CDI_DEVICES, LABEL_WORKSPACE, WORKSPACE_GENERATION } from "./resolve.js";
import { chooseResolvConf } from "./resolvconf.js";
import { applyLimitsChange, type LimitsChange, type WorkspaceLimits } from "./limits.js";

export interface CreateOptions {
  /** Per-bot image override (kept in the row; used for rebuilds). */
  image?: string;
  /** Fully qualified CDI device names, e.g. vendor.com/gpu=0. */
  cdiDevices?: string[];
  autoStart?: boolean;
  /** Overrides of the default limits (each field optional); validated by the caller. */
  limits?: LimitsChange;
  /** Progress of a create, for streaming to a caller (best effort: a throwing listener is ignored). */
  onProgress?: (progress: CreateProgress) => void;
}

export type CreateProgress =
  | { phase: "pulling"; image: string }
  | { phase: "pull_progress"; digest: string; offset: number; total: number }
  | { phase: "creating" }
  | { phase: "restoring" }
  | { phase: "starting" };

/** Calls the caller's progress listener; its failures never affect the create. */
export function report(opts: CreateOptions, progress: CreateProgress): void {
  try {
    opts.onProgress?.(progress);
  } catch {
    // a listener that went away
  }
}

/** The limits a (re)created workspace gets: the asked ones over the row's over the defaults. */
export function effectiveLimits(ctx: WorkspaceContext, previous: WorkspaceLimits | undefined, change: LimitsChange | undefined): WorkspaceLimits {
  return applyLimitsChange(previous ?? ctx.defaultLimits, change ?? {});
}

/** Every name fully qualified and known to the CDI registry, before anything is pulled or created. */
export function checkCdiDevices(ctx: WorkspaceContext, names: unknown): asserts names is string[] {
  if (!Array.isArray(names) || names.some((n) => typeof n !== "string")) {
    throw new WorkspaceError("invalid_argument", "cdiDevices must be a list of fully-qualified CDI device names");
  }
  try {
    (ctx.options.cdiRegistry ?? CdiRegistry.load()).resolve(names as string[]);
  } catch (err) {
    if (err instanceof CdiError) throw new WorkspaceError("invalid_argument", err.message, { cause: err });
    throw err;
  }
}

/**
 * Pull, create `workspace-<bot>`, record the row. The container's rootfs is its own
 * snapshot `workspace-<bot>` (reused when a lost container left it behind), or
 * `rootfsSnapshot` when given (a lost legacy container's).
 */
export async function createContainer(ctx: WorkspaceContext, botId: string, opts: CreateOptions, rootfsSnapshot?: string): Promise<void> {
  const containerId = workspaceContainerId(botId);
  const previous = await ctx.liveRow(botId);
  const image = opts.image ?? previous?.image ?? ctx.options.defaultImage;
  // A rebuilt or re-created workspace keeps the devices it had unless the caller names others.
  const cdiDevices = opts.cdiDevices ?? previous?.cdiDevices ?? [];
  // So do its limits (a rebuild re-applies them).
  const limits = effectiveLimits(ctx, previous?.limits, opts.limits);
  const socketDir = ctx.socketDir(botId);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o750 });
  fs.chmodSync(socketDir, 0o750);
  ctx.readContract();

  report(opts, { phase: "pulling", image });
  const pulled = await pullImage(ctx.cd.conn, image, {
    policy: ctx.options.pullPolicy ?? "if_not_present",
    snapshotter: ctx.cd.snapshots.snapshotter,
    ...(ctx.options.registry ? { registry: ctx.options.registry } : {}),
    onProgress: (digest, offset, total) => {
      ctx.options.onPullProgress?.(botId, digest, offset, total);
      report(opts, { phase: "pull_progress", digest, offset, total });
    },
  });
  report(opts, { phase: "creating" });
  const created = await ctx.cd.createContainerFromImage({
    id: containerId,
    image: pulled.name,
    // The rootfs (with /data) is a GC root of its own: it outlives a container lost behind
    // our back, and a rebuild of the container is created on it again.
    snapshotLabels: { [GC_ROOT_LABEL]: new Date().toISOString(), [LABEL_BOT_ID]: botId },
    reuseActiveSnapshot: true,
    ...(rootfsSnapshot ? { snapshotKey: rootfsSnapshot } : {}),
    labels: {
      [LABEL_BOT_ID]: botId,
      [LABEL_WORKSPACE]: WORKSPACE_GENERATION,
      // containerd drops labels with empty values: present only when devices are asked for.
      ...(cdiDevices.length > 0 ? { [LABEL_CDI_DEVICES]: cdiDevices.join(",") } : {}),
    },
    // The workspace's process is always the agent: the image's USER, WORKDIR, ENTRYPOINT
    // and CMD do not apply; its ENV goes to what the agent spawns (container-spec.ts).
    applyImageConfig: false,
    specOpts: (rootfs) => workspaceSpecOpts({
      containerId,
      resolvConf: chooseResolvConf(ctx.options.dataRoot).source,
      runtimePath: ctx.options.runtimePath,
      socketDir,
      imageConfig: rootfs.config,
      cdiDevices,
      limits,
      ...(ctx.options.cdiRegistry ? { cdiRegistry: ctx.options.cdiRegistry } : {}),
      ...(timezone(ctx) ? { timezone: timezone(ctx) } : {}),
      ...(ctx.options.jobs ? { jobs: ctx.options.jobs } : {}),
    }),
  });
  try {
    await ctx.store.upsertContainer({
      botId,
      containerId,
      containerName: containerId,
      image,
      status: "creating",
      namespace: ctx.cd.namespace,
      autoStart: opts.autoStart ?? previous?.autoStart ?? true,
      containerPath: socketDir,
      cdiDevices,
      limits,
    });
    await ctx.store.recordEvent(containerId, "created", {
      botId,
      image: pulled.name,
      limits,
      pulled: pulled.pulled,
      cdiDevices,
      replaced: previous?.containerId ?? null,
      dataKept: created.reusedSnapshot,
    });
  } catch (err) {
    // Without a row nothing would know this container: take it away again (a reused
    // snapshot holds the bot's data and stays).
    await ctx.cd.containers
      .delete(containerId, { removeSnapshot: !created.reusedSnapshot, ignoreNotFound: true })
      .catch((e: unknown) => ctx.log(`cleanup of ${containerId}: ${describeError(e)}`));
    throw err;
  }
  // A reused rootfs may predate GC-root labels (a legacy container's): label it now.
  if (created.reusedSnapshot) await protectRootfs(ctx, containerId);
  // A new workspace replaces any legacy route of the bot.
  await ctx.setRoute(botId, containerId, undefined);
  ctx.bridges.evict(botId);
}

function timezone(ctx: WorkspaceContext): string | undefined {
  return ctx.options.timezone ?? process.env.TZ;
}

/** A container found by label or name without a row gets one (so its state is recorded). */
export async function adoptRow(ctx: WorkspaceContext, botId: string, containerId: string, opts: CreateOptions): Promise<void> {
  const row = await ctx.store.getContainerByBot(botId);
  if (row !== undefined && row.containerId === containerId && row.status !== "deleted") return;
  const info = await ctx.cd.containers.get(containerId);
  const labelled = info.labels[LABEL_CDI_DEVICES];
  await ctx.store.upsertContainer({
    botId,
    containerId,
    containerName: containerId,
    image: info.image || opts.image || ctx.options.defaultImage,
    status: "stopped",
    namespace: ctx.cd.namespace,
    autoStart: opts.autoStart ?? row?.autoStart ?? true,
    containerPath: isLegacyContainerId(containerId) ? `tcp:${containerId}:${LEGACY_BRIDGE_PORT}` : ctx.socketDir(botId),
    cdiDevices: labelled ? labelled.split(",") : (row?.cdiDevices ?? []),
  });
  await ctx.store.recordEvent(containerId, "adopted", { botId, legacy: isLegacyContainerId(containerId) });
}

/** A workspace created before its rootfs was a GC root gets the label (best effort: logged on failure). */
export async function protectRootfs(ctx: WorkspaceContext, containerId: string): Promise<void> {
  try {
    const info = await ctx.cd.containers.get(containerId);
    if (!info.snapshotKey) return;
    const opts = { snapshotter: info.snapshotter || ctx.cd.snapshots.snapshotter };
    const snap = await ctx.cd.snapshots.stat(info.snapshotKey, opts);
    if (snap.kind === "active" && snap.labels[GC_ROOT_LABEL] === undefined) {
      await ctx.cd.snapshots.setLabels(info.snapshotKey, { [GC_ROOT_LABEL]: new Date().toISOString() }, opts);
    }
  } catch (err) {
    ctx.log(`${containerId}: could not mark its rootfs as a GC root: ${describeError(err)}`);
  }
}
