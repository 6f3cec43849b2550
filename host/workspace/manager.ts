// WorkspaceManager: one container per bot, its task, its network and its bridge
// client, with the database row kept honest about all of it.
//
// This is the facade: each public method validates its input, takes the bot's lock
// (context.ts: bounded wait, the work runs to its end even when the caller goes away),
// delegates to the module that does the work (create, start, stop, delete, revive,
// reconcile, health, status; data/ for export, import, backups and versions), and
// translates any failure into a WorkspaceError with a stable code (errors.ts), once,
// here. It is long because it has one short method per operation, not because work is
// done in it; the bridge-call bookkeeping of call() is in bridge-calls.ts.
import fs from "node:fs";
import type { BridgeClient, WorkspacePath } from "../bridge/client.js";
import { BridgePool } from "../bridge/pool.js";
import { ContainerdError } from "../containerd/errors.js";
import { validateBotId, workspaceContainerId } from "./botid.js";
import type { BridgeClientSource, BridgeTarget } from "./bridge-source.js";
import { LockTimeoutError } from "./lock.js";
import { IDEMPOTENT_BRIDGE_CALLS, fromCall, isBridgeUnavailable, trackCalls } from "./bridge-calls.js";
import { WorkspaceContext, type Contract, type WorkspaceManagerOptions } from "./context.js";
import { adoptRow, checkCdiDevices, createContainer, report, type CreateOptions } from "./create.js";
import { deleteWorkspace, finishInterruptedDelete } from "./delete.js";
import { WorkspaceError, describeError, toWorkspaceError } from "./errors.js";
import * as health from "./health.js";
import { runMaintenance, type MaintenanceOptions, type MaintenanceReport } from "./maintenance.js";
import { reconcile, type ReconcileEntry } from "./reconcile.js";
import type { ResolvedContainer } from "./resolve.js";
import { reopenHandedOff } from "./file-handoff.js";
import { reviveAgent } from "./revive.js";
import { startTask } from "./start.js";
import { listWorkspaces, workspaceStatus, type WorkspaceStatus } from "./status.js";
import { stopTask } from "./stop.js";
import { updateLimits } from "./update-limits.js";
import { limitsDifferences, validateLimitsChange, type LimitsChange, type WorkspaceLimits } from "./limits.js";
import type { ContainerRow, LifecycleEventRow } from "../store/types.js";
import type { Readable, Writable } from "node:stream";
import type { ArchiveLimits, ArchiveProgress, PackResult } from "../data/archive.js";
import type { ExtractResult } from "../data/archive-read.js";
import { exportData } from "../data/export.js";
import { importData, spoolArchive } from "../data/import.js";
import { extractInto } from "../data/extract.js";
import { backupOrphan, deleteWithPreserve, hasBackup, restoreFromBackup, type BackupResult } from "../data/preserve.js";
import { repairDataOp } from "../data/repair.js";
import { createVersion, deleteVersion, listVersions, rollbackTo, VERSION_SOURCES, type VersionInfo, type VersionList, type VersionSource } from "../data/versions.js";

export { AGENT_COMMAND, BRIDGE_SOCKET_PATH, RUNTIME_MOUNT, SOCKET_MOUNT } from "./container-spec.js";
export { LEGACY_BRIDGE_PORT } from "../../proto/constants.js";
export type { WorkspaceManagerOptions } from "./context.js";
export type { LimitsChange, WorkspaceLimits } from "./limits.js";
export type { WorkspaceStatus } from "./status.js";
export type { ReconcileAction, ReconcileEntry } from "./reconcile.js";
export type { CreateProgress } from "./create.js";
export { isBridgeUnavailable } from "./bridge-calls.js";

export interface EnsureOptions extends CreateOptions {
  /** The caller stops waiting when it fires; the operation completes anyway. */
  signal?: AbortSignal;
  /** A new workspace gets the bot's preserved backup as its /data before its task starts. */
  restoreData?: boolean;
  /** Progress of the restore (bytes and entries). */
  onDataProgress?: (p: ArchiveProgress) => void;
}

export interface DataOpOptions {
  signal?: AbortSignal;
  onProgress?: (p: ArchiveProgress) => void;
}
export type { ArchiveProgress, ExtractResult, PackResult, BackupResult, VersionInfo, VersionList, VersionSource };

export class WorkspaceManager {
  readonly bridges: BridgeClientSource;
  private readonly ctx: WorkspaceContext;
  /** Deletions asked for and not yet run or given up, per bot: calls to the bot answer not_found meanwhile. */
  private readonly pendingDeletes = new Map<string, number>();
  /** Bots whose row was checked for an unfinished deletion since this process started. */
  private readonly checkedForDeleting = new Set<string>();

  constructor(readonly options: WorkspaceManagerOptions) {
    let ctx: WorkspaceContext | undefined;
    this.bridges =
      options.bridges ??
      new BridgePool({
        resolveTarget: (botId) => ctx!.bridgeTarget(botId),
        revalidateTarget: true,
        channelOptions: { "grpc.use_local_subchannel_pool": 1 },
      });
    ctx = new WorkspaceContext(options, this.bridges);
    this.ctx = ctx;
  }

  get lock() {
    return this.ctx.lock;
  }

  socketDir(botId: string): string {
    return this.ctx.socketDir(botId);
  }

  socketPath(botId: string): string {
    return this.ctx.socketPath(botId);
  }

  /** The bundle's workspace-contract.json (read once). */
  readContract(): Contract {
    return this.ctx.readContract();
  }

  /** The one resolver (database → label → name scan → default); see resolve.ts. */
  resolve(botId: string): Promise<ResolvedContainer> {
    return this.boundary(() => this.ctx.resolve(botId));
  }

  /** Where the bot's bridge listens: its socket, or <ip>:9090 for a legacy container. */
  bridgeTarget(botId: string): Promise<BridgeTarget> {
    return this.boundary(() => this.ctx.bridgeTarget(botId));
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Creates the bot's workspace when it has none, then starts it. An existing workspace
   * asked for with another image or other devices is a conflict naming what differs.
   */
  async ensure(botId: string, opts: EnsureOptions = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    if (opts.cdiDevices !== undefined) checkCdiDevices(this.ctx, opts.cdiDevices);
    if (opts.limits !== undefined) opts = { ...opts, limits: validateLimitsChange(opts.limits) };
    if (opts.restoreData && !hasBackup(this.ctx, botId)) throw new WorkspaceError("not_found", `bot ${botId} has no preserved data to restore`);
    return this.lockedOp(botId, opts.signal, async () => {
      await this.finishDelete(botId);
      await repairDataOp(this.ctx, botId);
      const resolved = await this.ctx.resolve(botId);
      if (await this.ctx.containerExists(resolved.containerId)) {
        if (opts.restoreData) throw new WorkspaceError("conflict", `bot ${botId} has a workspace already: restore its data with restoreData()`);
        const row = await this.ctx.liveRow(botId);
        if (row !== undefined) checkSameWorkspace(row, row.limits ?? this.ctx.defaultLimits, opts);
        await adoptRow(this.ctx, botId, resolved.containerId, opts);
        report(opts, { phase: "starting" });
        await startTask(this.ctx, botId, resolved.containerId);
      } else {
        if (opts.restoreData && (await this.ctx.cd.snapshots.isActive(workspaceContainerId(botId)))) {
          throw new WorkspaceError("conflict", `bot ${botId} has a rootfs left by a lost container besides its backup: create without restore_data to keep that rootfs, or delete it first`);
        }
        if (!opts.restoreData) await backupOrphan(this.ctx, botId);
        await createContainer(this.ctx, botId, opts);
        if (opts.restoreData) {
          report(opts, { phase: "restoring" });
          await restoreFromBackup(this.ctx, botId, opts.onDataProgress ? { onProgress: opts.onDataProgress } : {});
        }
        report(opts, { phase: "starting" });
        await startTask(this.ctx, botId, workspaceContainerId(botId));
      }
      return workspaceStatus(this.ctx, botId);
    });
  }

  /** Starts the existing workspace (not_found when the bot has none). */
  async start(botId: string, opts: { signal?: AbortSignal } = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      if (await this.finishDelete(botId)) throw new WorkspaceError("not_found", `bot ${botId} has no workspace (its deletion was finished)`);
      await repairDataOp(this.ctx, botId);
      const resolved = await this.ctx.resolve(botId);
      if (!(await this.ctx.containerExists(resolved.containerId))) {
        throw new WorkspaceError("not_found", `bot ${botId} has no workspace container (${resolved.containerId})`);
      }
      await adoptRow(this.ctx, botId, resolved.containerId, {});
      await startTask(this.ctx, botId, resolved.containerId);
      return workspaceStatus(this.ctx, botId);
    });
  }

  /** SIGTERM, grace, SIGKILL, delete the task, remove its network; the container stays. */
  async stop(botId: string, opts: { signal?: AbortSignal; graceMs?: number } = {}): Promise<WorkspaceStatus> {
    if (opts.graceMs !== undefined && (!Number.isFinite(opts.graceMs) || opts.graceMs < 0 || opts.graceMs > 3_600_000)) {
      throw new WorkspaceError("invalid_argument", `stop: the grace period must be 0 to 3600 s, got ${opts.graceMs} ms`);
    }
    validateBotId(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      if (await this.finishDelete(botId)) throw new WorkspaceError("not_found", `bot ${botId} has no workspace (its deletion was finished)`);
      const resolved = await this.ctx.resolve(botId);
      const exists = await this.ctx.containerExists(resolved.containerId);
      const row = await this.ctx.liveRow(botId);
      if (!exists && row === undefined) throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
      await stopTask(this.ctx, botId, resolved.containerId, "stopped", opts.graceMs);
      return workspaceStatus(this.ctx, botId);
    });
  }

  /**
   * Removes the task, network, container, its snapshot, the socket dir and the row.
   * The row is marked "deleting" first: if this is cut short (the orchestrator dies,
   * containerd goes away), the next delete, ensure or reconcile finishes the deletion
   * instead of bringing the workspace back. Calls to the bot answer not_found from the
   * moment the deletion is asked for.
   */
  async delete(botId: string, opts: { signal?: AbortSignal; preserveData?: boolean; onProgress?: (p: ArchiveProgress) => void } = {}): Promise<BackupResult | undefined> {
    validateBotId(botId);
    this.countPendingDelete(botId, +1);
    this.bridges.evict(botId);
    let ran = false;
    try {
      return await this.lockedOp(botId, opts.signal, async () => {
        ran = true;
        try {
          // With preserve: the backup is confirmed on disk before anything is deleted (preserve.ts).
          if (opts.preserveData) {
            await repairDataOp(this.ctx, botId);
            return await deleteWithPreserve(this.ctx, botId, opts.onProgress);
          }
          // Without, the data goes anyway: a repair that cannot succeed (a swap it refuses
          // to finish because that would replace data) does not keep the workspace alive.
          await repairDataOp(this.ctx, botId).catch((err: unknown) => this.ctx.log(`${botId}: deleting without repairing the data operation cut short: ${describeError(err)}`));
          await deleteWorkspace(this.ctx, botId);
          return undefined;
        } finally {
          this.countPendingDelete(botId, -1);
        }
      });
    } catch (err) {
      // Given up before it ran (lock timeout): it never will. A caller that went away
      // leaves the deletion queued; it counts itself down when it runs.
      if (!ran && err instanceof LockTimeoutError) this.countPendingDelete(botId, -1);
      throw err;
    }
  }

  /**
   * Changes the workspace's memory, CPU and pids limits: the running task's cgroup at
   * once (no restart), the container's spec and the row, so restarts and rebuilds keep
   * them. Returns the status with the limits in force.
   */
  async updateLimits(botId: string, change: LimitsChange, opts: { signal?: AbortSignal } = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    const checked = validateLimitsChange(change);
    return this.lockedOp(botId, opts.signal, async () => {
      await updateLimits(this.ctx, botId, checked);
      return workspaceStatus(this.ctx, botId);
    });
  }

  /** The row plus what containerd says right now. */
  async status(botId: string): Promise<WorkspaceStatus> {
    validateBotId(botId);
    return this.boundary(() => workspaceStatus(this.ctx, botId));
  }

  /** The bot's lifecycle events, newest first. */
  async events(botId: string, page: { limit?: number; offset?: number } = {}): Promise<LifecycleEventRow[]> {
    validateBotId(botId);
    return this.boundary(async () => {
      const resolved = await this.ctx.resolve(botId);
      return this.ctx.store.listEvents(resolved.containerId, page.limit ?? 100, page.offset ?? 0);
    });
  }

  /** Every workspace the database knows, with live task state. */
  async list(): Promise<WorkspaceStatus[]> {
    return this.boundary(() => listWorkspaces(this.ctx));
  }

  // ------------------------------------------------------------------ data (host/data/)

  /** Streams /data as a tar.gz to `out` (export.ts). */
  async exportData(botId: string, out: Writable, opts: DataOpOptions = {}): Promise<PackResult> {
    validateBotId(botId);
    await this.refuseIfDeleting(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      await repairDataOp(this.ctx, botId);
      return exportData(this.ctx, botId, out, { ...(opts.onProgress ? { onProgress: opts.onProgress } : {}), ...(opts.signal ? { signal: opts.signal } : {}) });
    });
  }

  /** Replaces /data with a tar.gz read from `input`, all or nothing (import.ts). */
  async importData(botId: string, input: Readable | AsyncIterable<Uint8Array>, opts: DataOpOptions = {}): Promise<ExtractResult> {
    validateBotId(botId);
    await this.refuseIfDeleting(botId);
    // Received and checked whole before the workspace is touched (a refusal changes nothing).
    const spooled = await this.boundary(() => spoolArchive(this.ctx, input, this.archiveLimits));
    try {
      return await this.lockedOp(botId, opts.signal, async () => {
        await repairDataOp(this.ctx, botId);
        return importData(this.ctx, botId, fs.createReadStream(spooled.path), { limits: this.archiveLimits, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) });
      });
    } finally {
      spooled.remove();
    }
  }

  /** Imports the bot's preserved backup into its workspace, then removes the backup (preserve.ts). */
  async restoreData(botId: string, opts: DataOpOptions = {}): Promise<ExtractResult> {
    validateBotId(botId);
    await this.refuseIfDeleting(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      await repairDataOp(this.ctx, botId);
      return restoreFromBackup(this.ctx, botId, opts.onProgress ? { onProgress: opts.onProgress } : {});
    });
  }

  /** Unpacks a tar.gz into `dir` of the running workspace through its agent (extract.ts). */
  async extractInto(botId: string, dir: string, input: Readable | AsyncIterable<Uint8Array>): Promise<ExtractResult & { skipped: string[] }> {
    validateBotId(botId);
    await this.refuseIfDeleting(botId);
    return this.boundary(() => extractInto(this.ctx, (fn) => this.call(botId, fn), dir, input, this.archiveLimits));
  }

  /** Whether the bot has a preserved backup. */
  hasPreservedData(botId: string): boolean {
    return hasBackup(this.ctx, validateBotId(botId));
  }

  /** A new version of the workspace's rootfs (versions.ts). */
  async createVersion(botId: string, opts: { displayName?: string; source?: VersionSource; signal?: AbortSignal } = {}): Promise<VersionInfo> {
    validateBotId(botId);
    if (opts.source !== undefined && !VERSION_SOURCES.includes(opts.source)) throw new WorkspaceError("invalid_argument", `source must be one of ${VERSION_SOURCES.join(", ")}`);
    if (opts.displayName !== undefined && (opts.displayName.length > 200 || opts.displayName.includes("\0"))) {
      throw new WorkspaceError("invalid_argument", "a version's display name is at most 200 characters without NUL");
    }
    await this.refuseIfDeleting(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      await repairDataOp(this.ctx, botId);
      return createVersion(this.ctx, botId, { ...(opts.displayName !== undefined ? { displayName: opts.displayName } : {}), ...(opts.source ? { source: opts.source } : {}) });
    });
  }

  async listVersions(botId: string): Promise<VersionList> {
    validateBotId(botId);
    return this.boundary(() => listVersions(this.ctx, botId));
  }

  /** Rolls back to `version`, saving the current state first as a version of source `rollback`. */
  async rollback(botId: string, version: number, opts: { signal?: AbortSignal } = {}): Promise<{ saved: VersionInfo; to: VersionInfo }> {
    validateBotId(botId);
    checkVersionNumber(version);
    await this.refuseIfDeleting(botId);
    return this.lockedOp(botId, opts.signal, async () => {
      await repairDataOp(this.ctx, botId);
      return rollbackTo(this.ctx, botId, version);
    });
  }

  async deleteVersion(botId: string, version: number, opts: { signal?: AbortSignal } = {}): Promise<{ snapshotRemoved: boolean }> {
    validateBotId(botId);
    checkVersionNumber(version);
    await this.refuseIfDeleting(botId);
    return this.lockedOp(botId, opts.signal, () => deleteVersion(this.ctx, botId, version));
  }

  private get archiveLimits(): ArchiveLimits | undefined {
    return this.options.archiveLimits;
  }

  // ------------------------------------------------------------------ bridge calls

  /**
   * Runs `fn` with the bot's bridge client. When the bridge is UNAVAILABLE (the agent
   * died, so tini and the task exited), the task is restarted under the lock; `fn` is
   * run once more only when every bridge call it made only reads (IDEMPOTENT_BRIDGE_CALLS
   * in bridge-calls.ts). A call that may have changed something (Exec, writes, McpStdio…)
   * is not repeated: the caller gets "unavailable" saying the agent was restarted.
   */
  async call<T>(botId: string, fn: (client: BridgeClient) => Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    validateBotId(botId);
    await this.refuseIfDeleting(botId);
    const used = new Set<string>();
    try {
      return await fn(trackCalls(await this.bridges.get(botId), used, this.options.onBridgeCall));
    } catch (err) {
      if (!isBridgeUnavailable(err)) throw fromCall(err);
      this.ctx.log(`bridge of ${botId} unavailable (${describeError(err)}); restarting its task`);
    }
    this.bridges.evict(botId);
    await this.lockedOp(botId, opts.signal, () => reviveAgent(this.ctx, botId));
    const unsafe = [...used].filter((name) => !IDEMPOTENT_BRIDGE_CALLS.has(name));
    if (unsafe.length > 0) {
      throw new WorkspaceError(
        "unavailable",
        `the agent of bot ${botId} went away during ${unsafe.join(", ")} and was restarted; the call was not run again because it may already have taken effect`,
        { reason: "agent_restarted" },
      );
    }
    try {
      return await fn(trackCalls(await this.bridges.get(botId), new Set(), this.options.onBridgeCall));
    } catch (err) {
      throw fromCall(err);
    }
  }

  /**
   * Opens a regular file of the bot's workspace for reading on the host: the agent
   * opens it, with ReadRaw's rules, and hands off its descriptor, and the host reaches
   * that open file (file-handoff.ts). `refused` says why it could not (a file that
   * reports size 0, an agent that streamed instead, a host that may not reach the
   * agent's descriptors): the caller then reads through ReadRaw. ReadRaw's errors
   * (no such file, a directory, an offset past the end) are thrown. The caller closes `fd`.
   */
  async openFile(
    botId: string,
    path: WorkspacePath,
    range: { offset?: number; length?: number },
    opts: { signal?: AbortSignal } = {},
  ): Promise<{ fd: number; fileSize: number } | { refused: string }> {
    return this.call(botId, async (c) => {
      const handed = await c.readRawHandoff(path, range, { signal: opts.signal, timeoutMs: 60_000 });
      if (handed === undefined) return { refused: "the agent streamed the file" };
      try {
        let pid: number | undefined;
        try {
          const { containerId } = await this.ctx.resolve(botId);
          const task = await this.ctx.cd.tasks.status(containerId, { timeoutMs: 5_000 });
          pid = task?.status === "running" ? task.pid : undefined;
        } catch (err) {
          return { refused: `the workspace's task could not be looked up: ${describeError(err)}` };
        }
        if (!pid) return { refused: "the workspace's task is not running" };
        const opened = reopenHandedOff(pid, handed.handoff);
        return "fd" in opened ? { fd: opened.fd, fileSize: handed.fileSize } : opened;
      } finally {
        handed.release();
      }
    });
  }

  // ------------------------------------------------------------------ supervision

  /** Bots whose workspace should be running (row "running"): what the supervisor probes. */
  botsMeantToRun(): Promise<string[]> {
    return this.boundary(() => health.botsMeantToRun(this.ctx));
  }

  /** Containers whose row says "running" but whose task is not running (a missed exit). */
  deadButMeantToRun(): Promise<string[]> {
    return this.boundary(() => health.deadButMeantToRun(this.ctx));
  }

  probe(botId: string, timeoutMs: number): Promise<"ok" | "unresponsive" | "skipped"> {
    validateBotId(botId);
    return this.boundary(() => health.probe(this.ctx, botId, timeoutMs));
  }

  restartUnresponsive(botId: string, timeoutMs: number): Promise<"restarted" | "ignored"> {
    validateBotId(botId);
    return this.lockedOp(botId, undefined, () => health.restartUnresponsive(this.ctx, botId, timeoutMs));
  }

  async restartAfterExit(containerId: string, exit: { exitStatus: number }): Promise<"restarted" | "ignored"> {
    const owner = await this.boundary(() => this.ctx.store.getContainer(containerId));
    if (owner === undefined) return "ignored";
    return this.lockedOp(owner.botId, undefined, () => health.restartAfterExit(this.ctx, owner.botId, containerId, exit));
  }

  /** Counts an OOM kill in `containerId` on its row; false when it is not a known workspace. */
  recordOom(containerId: string): Promise<boolean> {
    return this.boundary(() => health.recordOom(this.ctx, containerId));
  }

  /** Marks the workspace "error" (a supervisor gave up restarting it); start or ensure clears it. */
  async markFailed(containerId: string, type: string, payload: Record<string, unknown>): Promise<void> {
    const owner = await this.boundary(() => this.ctx.store.getContainer(containerId));
    if (owner === undefined) return;
    await this.lockedOp(owner.botId, undefined, () => health.markFailed(this.ctx, containerId, type, payload));
  }

  /** Rotates task logs and prunes lifecycle events (maintenance.ts). */
  maintain(opts: MaintenanceOptions = {}): Promise<MaintenanceReport> {
    return this.boundary(() => runMaintenance(this.ctx, opts));
  }

  /** See reconcile.ts. */
  reconcile(opts: { signal?: AbortSignal } = {}): Promise<ReconcileEntry[]> {
    return this.boundary(() => reconcile(this.ctx, opts));
  }

  async close(): Promise<void> {
    await this.bridges.close?.();
  }

  // ------------------------------------------------------------------ internals

  private lockedOp<T>(botId: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return this.boundary(() => this.ctx.locked(botId, signal, fn));
  }

  private finishDelete(botId: string): Promise<boolean> {
    return finishInterruptedDelete(this.ctx, botId);
  }

  private countPendingDelete(botId: string, delta: number): void {
    const n = (this.pendingDeletes.get(botId) ?? 0) + delta;
    if (n > 0) this.pendingDeletes.set(botId, n);
    else this.pendingDeletes.delete(botId);
  }

  /**
   * not_found for a bot whose deletion is asked for, under way, or left unfinished (its
   * row says "deleting"; read once per process, then kept in memory by delete.ts).
   */
  private async refuseIfDeleting(botId: string): Promise<void> {
    if (!this.checkedForDeleting.has(botId)) {
      const row = await this.boundary(() => this.ctx.store.getContainerByBot(botId));
      if (row?.status === "deleting") this.ctx.rowsDeleting.add(botId);
      this.checkedForDeleting.add(botId);
    }
    if (this.pendingDeletes.has(botId) || this.ctx.rowsDeleting.has(botId)) {
      throw new WorkspaceError("not_found", `the workspace of bot ${botId} is being deleted`);
    }
  }

  /** The one translation point: containerd being down becomes one clear "unavailable", everything a WorkspaceError. */
  private async boundary<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const cd = this.ctx.cd;
      if (err instanceof ContainerdError && (err.code === "unavailable" || (err.code === "deadline_exceeded" && !fs.existsSync(cd.conn.address)))) {
        throw new WorkspaceError("unavailable", `containerd is unavailable (${cd.conn.address}): ${err.message}`, { cause: err, reason: "containerd" });
      }
      throw toWorkspaceError(err);
    }
  }
}

/** An existing workspace asked for again must be asked for as it is. */
function checkSameWorkspace(row: ContainerRow, limits: WorkspaceLimits, opts: CreateOptions): void {
  const differences: string[] = [];
  if (opts.limits !== undefined) differences.push(...limitsDifferences(limits, opts.limits).map((d) => `limits ${d}`));
  if (opts.image !== undefined && opts.image !== row.image) differences.push(`image ${JSON.stringify(row.image)} (asked: ${JSON.stringify(opts.image)})`);
  if (opts.cdiDevices !== undefined && !sameSet(opts.cdiDevices, row.cdiDevices)) {
    differences.push(`devices [${row.cdiDevices.join(", ")}] (asked: [${opts.cdiDevices.join(", ")}])`);
  }
  if (differences.length > 0) {
    throw new WorkspaceError("conflict", `the workspace of bot ${row.botId} already exists with ${differences.join(" and ")}; delete it first to change the image or devices, or change limits with updateLimits`);
  }
}

function checkVersionNumber(version: number): void {
  if (!Number.isSafeInteger(version) || version < 1) throw new WorkspaceError("invalid_argument", `a version is a positive integer, got ${String(version)}`);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  return sa.size === new Set(b).size && [...sa].every((x) => b.includes(x));
}
