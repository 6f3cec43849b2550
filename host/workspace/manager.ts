// WorkspaceManager: one container per bot, its task, its network and its bridge
// client, with the database row kept honest about all of it.
//
// Every state change of a bot's workspace runs under that bot's lock (KeyedLock);
// a caller whose AbortSignal fires stops waiting, the sequence still finishes.
// Start order (never "running but unreachable"):
//   create task (pid, netns exists) → CNI ADD on /proc/<pid>/ns/net → Tasks.Start
//   → wait (bounded) until the bridge answers Info → check the protocol version.
// Any failure after the task exists removes the task and its network again and
// marks the row "error"; the error is returned, never swallowed.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BridgeClient } from "../bridge/client.js";
import type { ContainerdClient } from "../containerd/client.js";
import { ContainerdError, isNotFound } from "../containerd/errors.js";
import { pullImage, type PullPolicy } from "../containerd/pull.js";
import type { RegistryOptions } from "../containerd/registry.js";
import { CdiError, CdiRegistry } from "../containerd/cdi.js";
import { GC_ROOT_LABEL } from "../containerd/snapshots.js";
import { bindMount, withCdiDevices, withEnv, withHostname, withMounts, withProcessArgs, withTZ, type SpecOpt } from "../containerd/spec.js";
import type { WorkspaceNetwork } from "../network/network.js";
import type { ContainerRow, ContainerStatus, Store } from "../store/types.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { isLegacyContainerId, validateBotId, workspaceContainerId } from "./botid.js";
import { targetAddress, type BridgeClientSource, type BridgeTarget } from "./bridge-source.js";
import { BridgePool } from "../bridge/pool.js";
import { WorkspaceError, describeError } from "./errors.js";
import { KeyedLock } from "./lock.js";
import { chooseResolvConf } from "./resolvconf.js";
import { LABEL_BOT_ID, LABEL_CDI_DEVICES, LABEL_WORKSPACE, WORKSPACE_GENERATION, resolveContainerId, type ResolvedContainer } from "./resolve.js";

export const AGENT_COMMAND = ["/opt/memoh/bin/tini", "-g", "--", "/opt/memoh/bin/node", "/opt/memoh/agent.js"];
export const RUNTIME_MOUNT = "/opt/memoh";
export const SOCKET_MOUNT = "/run/memoh";
export const BRIDGE_SOCKET_PATH = "/run/memoh/bridge.sock";
export const LEGACY_BRIDGE_PORT = 9090;

export interface WorkspaceManagerOptions {
  containerd: ContainerdClient;
  store: Store;
  network: WorkspaceNetwork;
  /** Sockets (<dataRoot>/run/<bot>), task logs, the fallback resolv.conf. */
  dataRoot: string;
  /** The runtime bundle mounted read-only at /opt/memoh. */
  runtimePath: string;
  /** Image of a workspace without a per-bot override. */
  defaultImage: string;
  pullPolicy?: PullPolicy;
  registry?: RegistryOptions;
  /** IANA zone given to workspaces as TZ (default: the host's TZ env, else none). */
  timezone?: string;
  /** SIGTERM → SIGKILL grace of stop (default 10 s). */
  stopGraceMs?: number;
  /** How long start waits for the bridge to answer Info (default 15 s). */
  readyTimeoutMs?: number;
  cdiRegistry?: CdiRegistry;
  /** Default: the bridge pool (host/bridge/pool.ts) over bridgeTarget(). */
  bridges?: BridgeClientSource;
  onPullProgress?: (botId: string, digest: string, offset: number, total: number) => void;
  log?: (message: string) => void;
}

export interface EnsureOptions {
  /** Per-bot image override (kept in the row; used for rebuilds). */
  image?: string;
  /** Fully qualified CDI device names, e.g. vendor.com/gpu=0. */
  cdiDevices?: string[];
  autoStart?: boolean;
  /** The caller stops waiting when it fires; the operation completes anyway. */
  signal?: AbortSignal;
}

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
}

export type ReconcileAction = "rebuilt" | "started" | "healthy" | "renetworked" | "stopped" | "deleted" | "skipped" | "failed";

export interface ReconcileEntry {
  botId: string;
  containerId: string;
  action: ReconcileAction;
  error?: string;
}

interface Contract {
  protocolVersion: number;
  bundleVersion: string;
}

const lockKey = (botId: string) => `bot:${botId}`;

/** The bridge says the agent is gone (socket missing, connection refused or dropped). */
export function isBridgeUnavailable(err: unknown): boolean {
  return rpcCode(err) === Status.UNAVAILABLE;
}

export class WorkspaceManager {
  readonly lock = new KeyedLock();
  readonly bridges: BridgeClientSource;
  private readonly cd: ContainerdClient;
  private readonly store: Store;
  private readonly network: WorkspaceNetwork;
  private readonly log: (message: string) => void;
  /** The bridge route of each bot seen so far (legacy bots: TCP at their CNI IP). */
  private readonly routes = new Map<string, BridgeTarget>();
  private contract: Contract | undefined;

  constructor(readonly options: WorkspaceManagerOptions) {
    this.cd = options.containerd;
    this.store = options.store;
    this.network = options.network;
    this.log = options.log ?? ((m) => console.warn(`[workspace] ${m}`));
    this.bridges =
      options.bridges ??
      new BridgePool({
        resolveTarget: (botId) => this.bridgeTarget(botId),
        revalidateTarget: true,
        channelOptions: { "grpc.use_local_subchannel_pool": 1 },
      });
  }

  // ------------------------------------------------------------------ paths

  socketDir(botId: string): string {
    return path.join(this.options.dataRoot, "run", validateBotId(botId));
  }

  socketPath(botId: string): string {
    return path.join(this.socketDir(botId), "bridge.sock");
  }

  private logPath(containerId: string): string {
    return path.join(this.options.dataRoot, "logs", `${containerId}.log`);
  }

  /** The bundle's workspace-contract.json (read once). */
  readContract(): Contract {
    if (this.contract) return this.contract;
    const file = path.join(this.options.runtimePath, "workspace-contract.json");
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (err) {
      throw new WorkspaceError("failed_precondition", `cannot read the runtime bundle's contract ${file}: ${describeError(err)}`, { cause: err });
    }
    const p = parsed as { protocolVersion?: unknown; bundleVersion?: unknown };
    if (typeof p.protocolVersion !== "number") throw new WorkspaceError("failed_precondition", `${file} has no numeric protocolVersion`);
    this.contract = { protocolVersion: p.protocolVersion, bundleVersion: typeof p.bundleVersion === "string" ? p.bundleVersion : "" };
    return this.contract;
  }

  // ------------------------------------------------------------------ resolution and routes

  /** The one resolver (database → label → name scan → default); see resolve.ts. */
  resolve(botId: string): Promise<ResolvedContainer> {
    return this.guard(() => resolveContainerId(botId, { store: this.store, containerd: this.cd }));
  }

  /** Where the bot's bridge listens: its socket, or <ip>:9090 for a legacy container. */
  async bridgeTarget(botId: string): Promise<BridgeTarget> {
    validateBotId(botId);
    const known = this.routes.get(botId);
    if (known) return known;
    const resolved = await this.resolve(botId);
    if (resolved.legacy) {
      const cached = this.network.cachedAttachment(resolved.containerId);
      if (cached) {
        const target: BridgeTarget = { kind: "tcp", host: cached.ip, port: LEGACY_BRIDGE_PORT };
        this.routes.set(botId, target);
        return target;
      }
      throw new WorkspaceError("unavailable", `legacy workspace ${resolved.containerId} has no known IP (start it or run reconcile)`);
    }
    return { kind: "unix", socketPath: this.socketPath(botId) };
  }

  private setRoute(botId: string, containerId: string, ip: string | undefined): void {
    if (isLegacyContainerId(containerId) && ip !== undefined) this.routes.set(botId, { kind: "tcp", host: ip, port: LEGACY_BRIDGE_PORT });
    else this.routes.set(botId, { kind: "unix", socketPath: this.socketPath(botId) });
  }

  // ------------------------------------------------------------------ public operations

  /** Creates the bot's workspace when it has none, then starts it. */
  async ensure(botId: string, opts: EnsureOptions = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    if (opts.cdiDevices !== undefined) this.checkCdiDevices(opts.cdiDevices);
    return this.locked(botId, opts.signal, async () => {
      await this.finishInterruptedDelete(botId);
      const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
      if (await this.containerExists(resolved.containerId)) {
        await this.adoptRow(botId, resolved.containerId, opts);
        await this.startLocked(botId, resolved.containerId);
      } else {
        await this.createLocked(botId, opts);
        await this.startLocked(botId, workspaceContainerId(botId));
      }
      return this.statusUnlocked(botId);
    });
  }

  /** Starts the existing workspace (not_found when the bot has none). */
  async start(botId: string, opts: { signal?: AbortSignal } = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    return this.locked(botId, opts.signal, async () => {
      if (await this.finishInterruptedDelete(botId)) throw new WorkspaceError("not_found", `bot ${botId} has no workspace (its deletion was finished)`);
      const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
      if (!(await this.containerExists(resolved.containerId))) {
        throw new WorkspaceError("not_found", `bot ${botId} has no workspace container (${resolved.containerId})`);
      }
      await this.adoptRow(botId, resolved.containerId, {});
      await this.startLocked(botId, resolved.containerId);
      return this.statusUnlocked(botId);
    });
  }

  /** SIGTERM, grace, SIGKILL, delete the task, remove its network; the container stays. */
  async stop(botId: string, opts: { signal?: AbortSignal } = {}): Promise<WorkspaceStatus> {
    validateBotId(botId);
    return this.locked(botId, opts.signal, async () => {
      const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
      const exists = await this.containerExists(resolved.containerId);
      const row = await this.store.getContainerByBot(botId);
      if (!exists && row === undefined) throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
      await this.stopLocked(botId, resolved.containerId, "stopped");
      return this.statusUnlocked(botId);
    });
  }

  /**
   * Removes the task, network, container, its snapshot, the socket dir and the row.
   * The row is marked "deleting" first: if this is cut short (the orchestrator dies,
   * containerd goes away), the next delete, ensure or reconcile finishes the deletion
   * instead of bringing the workspace back.
   */
  async delete(botId: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    validateBotId(botId);
    return this.locked(botId, opts.signal, () => this.deleteLocked(botId));
  }

  /** The row plus what containerd says right now. */
  async status(botId: string): Promise<WorkspaceStatus> {
    validateBotId(botId);
    return this.guard(() => this.statusUnlocked(botId));
  }

  /** Every workspace the database knows, with live task state. */
  async list(): Promise<WorkspaceStatus[]> {
    return this.guard(async () => {
      const rows = await this.store.listContainers();
      const tasks = new Map((await this.cd.tasks.list()).map((t) => [t.id, t]));
      const containers = new Set((await this.cd.containers.list()).map((c) => c.id));
      const recorded = new Set<string>();
      for (const row of rows) if ((await this.store.listSnapshots(row.containerId)).length > 0) recorded.add(row.containerId);
      const snapshots = new Set((await this.cd.snapshots.list()).map((s) => s.name));
      return rows
        .filter((r) => r.status !== "deleted")
        .map((row) => {
          const task = tasks.get(row.containerId);
          const legacy = isLegacyContainerId(row.containerId);
          const route = this.routes.get(row.botId);
          return {
            botId: row.botId,
            containerId: row.containerId,
            row,
            containerExists: containers.has(row.containerId),
            task: task?.status ?? "none",
            pid: task?.pid,
            legacy,
            bridge: route ? targetAddress(route) : `unix:${this.socketPath(row.botId)}`,
            ip: legacy ? this.network.cachedAttachment(row.containerId)?.ip : undefined,
            hasPreservedData: recorded.has(row.containerId) || (!containers.has(row.containerId) && snapshots.has(row.containerId)),
          };
        });
    });
  }

  /**
   * Runs `fn` with the bot's bridge client. When the bridge is UNAVAILABLE (the
   * agent died, so tini and the task exited), the task is restarted under the
   * lock and `fn` is retried once.
   */
  async call<T>(botId: string, fn: (client: BridgeClient) => Promise<T>, opts: { signal?: AbortSignal } = {}): Promise<T> {
    validateBotId(botId);
    try {
      return await fn(await this.bridges.get(botId));
    } catch (err) {
      if (!isBridgeUnavailable(err)) throw err;
      this.log(`bridge of ${botId} unavailable (${describeError(err)}); restarting its task`);
    }
    this.bridges.evict(botId);
    await this.locked(botId, opts.signal, () => this.reviveLocked(botId));
    return fn(await this.bridges.get(botId));
  }

  /**
   * The init process of `containerId`'s task exited (a containerd TaskExit event). A
   * workspace that should be running (its row says "running": no stop or delete of ours
   * is behind the exit, those mark the row first under the same lock) and whose task is
   * not running again already is restarted. Returns what was done.
   */
  async restartAfterExit(containerId: string, exit: { exitStatus: number }): Promise<"restarted" | "ignored"> {
    const owner = await this.guard(() => this.store.getContainer(containerId));
    if (owner === undefined) return "ignored";
    const botId = owner.botId;
    return this.locked(botId, undefined, async () => {
      const row = await this.store.getContainerByBot(botId);
      if (row === undefined || row.containerId !== containerId || row.status !== "running") return "ignored";
      if ((await this.cd.tasks.status(containerId))?.status === "running") return "ignored";
      await this.store.recordEvent(containerId, "task_exited", { botId, exitStatus: exit.exitStatus });
      this.bridges.evict(botId);
      await this.startLocked(botId, containerId);
      return "restarted";
    });
  }

  /** Bots whose workspace should be running (row "running"): what the supervisor probes. */
  async botsMeantToRun(): Promise<string[]> {
    return (await this.guard(() => this.store.listContainers({ status: "running" }))).map((r) => r.botId);
  }

  /**
   * Liveness probe of a workspace that should be running: its agent answers Info within
   * `timeoutMs` through the pool. "skipped" when it is not meant to be running or a state
   * change of it is under way.
   */
  async probe(botId: string, timeoutMs: number): Promise<"ok" | "unresponsive" | "skipped"> {
    validateBotId(botId);
    if (this.lock.isBusy(lockKey(botId))) return "skipped";
    const row = await this.guard(() => this.store.getContainerByBot(botId));
    if (row?.status !== "running") return "skipped";
    if ((await this.guard(() => this.cd.tasks.status(row.containerId)))?.status !== "running") return "skipped";
    try {
      const client = await this.bridges.get(botId);
      await client.info({ timeoutMs });
      return "ok";
    } catch {
      return "unresponsive";
    }
  }

  /**
   * Restarts a running workspace whose agent stopped answering (a hung event loop, a
   * stopped process), unless it answers within `timeoutMs` now. Calls to such an agent
   * time out rather than fail, so nothing else would restart it.
   */
  async restartUnresponsive(botId: string, timeoutMs: number): Promise<"restarted" | "ignored"> {
    validateBotId(botId);
    return this.locked(botId, undefined, async () => {
      const row = await this.store.getContainerByBot(botId);
      if (row?.status !== "running") return "ignored";
      const task = await this.cd.tasks.status(row.containerId);
      if (task?.status !== "running") return "ignored";
      try {
        await this.waitForBridgeWithin(botId, timeoutMs);
        return "ignored";
      } catch {
        // still deaf: restart below
      }
      await this.store.recordEvent(row.containerId, "agent_unresponsive", { botId, pid: task.pid });
      this.bridges.evict(botId);
      await this.replaceTaskLocked(botId, row.containerId);
      return "restarted";
    });
  }

  /** Marks the workspace "error" (a supervisor gave up restarting it); start or ensure clears it. */
  async markFailed(containerId: string, type: string, payload: Record<string, unknown>): Promise<void> {
    const owner = await this.guard(() => this.store.getContainer(containerId));
    if (owner === undefined) return;
    await this.locked(owner.botId, undefined, async () => {
      const row = await this.store.getContainer(containerId);
      if (row?.status === "running") await this.store.setStatus(containerId, "error", { type, payload });
    });
  }

  /**
   * Over the rows with auto_start: a missing container is rebuilt, a task that is
   * not running is started (a workspace stopped on purpose stays stopped), a running
   * one gets its network re-applied and counts as healthy only when its bridge
   * answers. A row left "deleting" (any auto_start) has its deletion finished.
   * Errors are per bot (reported, and the row marked "error"), the sweep goes on.
   */
  async reconcile(opts: { signal?: AbortSignal } = {}): Promise<ReconcileEntry[]> {
    const rows = await this.guard(() => this.store.listContainers());
    const running = await this.guard(async () => (await this.cd.tasks.list()).filter((t) => t.status === "running").map((t) => t.id));
    const hygiene = await this.network.cleanupStale(running);
    for (const e of hygiene.errors) this.log(`network hygiene: ${e}`);
    const entries: ReconcileEntry[] = [];
    for (const row of rows) {
      if (row.status === "deleted" || (!row.autoStart && row.status !== "deleting")) continue;
      try {
        validateBotId(row.botId);
      } catch (err) {
        entries.push({ botId: row.botId, containerId: row.containerId, action: "skipped", error: describeError(err) });
        continue;
      }
      try {
        const action = await this.locked(row.botId, opts.signal, () => this.reconcileOneLocked(row));
        entries.push({ botId: row.botId, containerId: row.containerId, action });
      } catch (err) {
        this.log(`reconcile ${row.botId}: ${describeError(err)}`);
        entries.push({ botId: row.botId, containerId: row.containerId, action: "failed", error: describeError(err) });
        // Keep the row honest; a start failure already did this, a failed rebuild or lookup did not.
        const now = await this.store.getContainerByBot(row.botId).catch(() => undefined);
        // A deletion that failed again stays "deleting": it is finished later, never rebuilt.
        if (now !== undefined && now.status !== "error" && now.status !== "deleting") {
          await this.store
            .setStatus(now.containerId, "error", { type: "reconcile_failed", payload: { error: describeError(err) } })
            .catch((e: unknown) => this.log(`reconcile ${row.botId}: cannot record the failure: ${describeError(e)}`));
        }
      }
    }
    return entries;
  }

  /**
   * Hook run before a missing container is rebuilt. The rebuild itself already creates
   * the container on the lost container's surviving snapshot (its rootfs and /data, a
   * GC root), so nothing is lost; this is where further recovery would go.
   */
  async recoverOrphanedData(botId: string): Promise<void> {
    void botId;
  }

  async close(): Promise<void> {
    await this.bridges.close?.();
  }

  // ------------------------------------------------------------------ sequences (under the lock)

  private locked<T>(botId: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return this.lock.run(lockKey(botId), () => this.guard(fn), {
      ...(signal ? { signal } : {}),
      onOrphanError: (err) => this.log(`${botId}: an operation whose caller went away failed: ${describeError(err)}`),
    });
  }

  /** containerd being down becomes one clear "unavailable" error. */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ContainerdError && (err.code === "unavailable" || (err.code === "deadline_exceeded" && !fs.existsSync(this.cd.conn.address)))) {
        throw new WorkspaceError("unavailable", `containerd is unavailable (${this.cd.conn.address}): ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  private async containerExists(containerId: string): Promise<boolean> {
    try {
      await this.cd.containers.get(containerId);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** A container found by label or name without a row gets one (so its state is recorded). */
  private async adoptRow(botId: string, containerId: string, opts: EnsureOptions): Promise<void> {
    const row = await this.store.getContainerByBot(botId);
    if (row !== undefined && row.containerId === containerId && row.status !== "deleted") return;
    const info = await this.cd.containers.get(containerId);
    const labelled = info.labels[LABEL_CDI_DEVICES];
    await this.store.upsertContainer({
      botId,
      containerId,
      containerName: containerId,
      image: info.image || opts.image || this.options.defaultImage,
      status: "stopped",
      namespace: this.cd.namespace,
      autoStart: opts.autoStart ?? row?.autoStart ?? true,
      containerPath: isLegacyContainerId(containerId) ? `tcp:${containerId}:${LEGACY_BRIDGE_PORT}` : this.socketDir(botId),
      cdiDevices: labelled ? labelled.split(",") : (row?.cdiDevices ?? []),
    });
    await this.store.recordEvent(containerId, "adopted", { botId, legacy: isLegacyContainerId(containerId) });
  }

  /** Every name fully qualified and known to the CDI registry, before anything is pulled or created. */
  private checkCdiDevices(names: string[]): void {
    if (!Array.isArray(names) || names.some((n) => typeof n !== "string")) {
      throw new WorkspaceError("invalid_argument", "cdiDevices must be a list of fully-qualified CDI device names");
    }
    try {
      (this.options.cdiRegistry ?? CdiRegistry.load()).resolve(names);
    } catch (err) {
      if (err instanceof CdiError) throw new WorkspaceError("invalid_argument", err.message, { cause: err });
      throw err;
    }
  }

  private specOpts(botId: string, containerId: string, cdiDevices: string[]): SpecOpt[] {
    const resolv = chooseResolvConf(this.options.dataRoot);
    const opts: SpecOpt[] = [
      withProcessArgs(...AGENT_COMMAND),
      withHostname(containerId),
      withEnv({ BRIDGE_SOCKET_PATH }),
      withMounts([
        bindMount(resolv.source, "/etc/resolv.conf", ["rbind", "ro"]),
        bindMount(this.options.runtimePath, RUNTIME_MOUNT, ["rbind", "ro"]),
        bindMount(this.socketDir(botId), SOCKET_MOUNT, ["rbind", "rw"]),
      ]),
    ];
    const tz = this.options.timezone ?? process.env.TZ;
    if (tz) opts.push(withTZ(tz));
    if (cdiDevices.length > 0) opts.push(withCdiDevices(cdiDevices, this.options.cdiRegistry));
    return opts;
  }

  /**
   * Pull (by policy, with progress), create `workspace-<bot>`, record the row. No task yet.
   * The container's rootfs is its own snapshot `workspace-<bot>` (reused when a lost
   * container left it behind), or `rootfsSnapshot` when given (a lost legacy container's).
   */
  private async createLocked(botId: string, opts: EnsureOptions, rootfsSnapshot?: string): Promise<void> {
    const containerId = workspaceContainerId(botId);
    const previous = await this.store.getContainerByBot(botId);
    const image = opts.image ?? (previous && previous.status !== "deleted" ? previous.image : undefined) ?? this.options.defaultImage;
    // A rebuilt or re-created workspace keeps the devices it had unless the caller names others.
    const cdiDevices = opts.cdiDevices ?? (previous && previous.status !== "deleted" ? previous.cdiDevices : undefined) ?? [];
    const socketDir = this.socketDir(botId);
    fs.mkdirSync(socketDir, { recursive: true, mode: 0o750 });
    fs.chmodSync(socketDir, 0o750);
    this.readContract();

    const pulled = await pullImage(this.cd.conn, image, {
      policy: this.options.pullPolicy ?? "if_not_present",
      snapshotter: this.cd.snapshots.snapshotter,
      ...(this.options.registry ? { registry: this.options.registry } : {}),
      onProgress: (digest, offset, total) => this.options.onPullProgress?.(botId, digest, offset, total),
    });
    const created = await this.cd.createContainerFromImage({
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
      specOpts: this.specOpts(botId, containerId, cdiDevices),
    });
    try {
      await this.store.upsertContainer({
        botId,
        containerId,
        containerName: containerId,
        image,
        status: "creating",
        namespace: this.cd.namespace,
        autoStart: opts.autoStart ?? previous?.autoStart ?? true,
        containerPath: socketDir,
        cdiDevices,
      });
      await this.store.recordEvent(containerId, "created", {
        botId,
        image: pulled.name,
        pulled: pulled.pulled,
        cdiDevices,
        replaced: previous?.containerId ?? null,
        dataKept: created.reusedSnapshot,
      });
    } catch (err) {
      // Without a row nothing would know this container: take it away again (a reused
      // snapshot holds the bot's data and stays).
      await this.cd.containers.delete(containerId, { removeSnapshot: !created.reusedSnapshot, ignoreNotFound: true }).catch((e: unknown) => this.log(`cleanup of ${containerId}: ${describeError(e)}`));
      throw err;
    }
    // A reused rootfs may predate GC-root labels (a legacy container's): label it now.
    if (created.reusedSnapshot) await this.protectRootfs(containerId);
    // A new workspace replaces any legacy route of the bot.
    this.routes.set(botId, { kind: "unix", socketPath: this.socketPath(botId) });
    this.bridges.evict(botId);
  }

  private async deleteLocked(botId: string): Promise<void> {
    const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
    this.bridges.evict(botId);
    this.routes.delete(botId);
    const marked = await this.store.getContainerByBot(botId);
    if (marked !== undefined && marked.status !== "deleted" && marked.status !== "deleting") {
      await this.store.setStatus(marked.containerId, "deleting", { type: "deleting", payload: { botId } });
    }
    const exists = await this.containerExists(resolved.containerId);
    if (exists) {
      await this.cd.tasks.stop(resolved.containerId, this.options.stopGraceMs ?? 10_000);
      await this.network.removeNetwork(resolved.containerId);
      await this.cd.containers.delete(resolved.containerId, { removeSnapshot: true, ignoreNotFound: true });
    } else {
      await this.network.removeNetwork(resolved.containerId);
      // The rootfs of a container lost earlier (a GC root, so it is still there).
      await this.cd.snapshots.remove(resolved.containerId, { ignoreNotFound: true });
    }
    fs.rmSync(this.socketDir(botId), { recursive: true, force: true });
    const row = await this.store.getContainerByBot(botId);
    if (row !== undefined) {
      await this.store.recordEvent(row.containerId, "deleted", { botId, containerExisted: exists });
      await this.store.deleteContainer(row.containerId);
    } else {
      await this.store.recordEvent(resolved.containerId, "deleted", { botId, containerExisted: exists });
    }
  }

  /** A deletion that was cut short is finished before anything else happens to the bot. */
  private async finishInterruptedDelete(botId: string): Promise<boolean> {
    const row = await this.store.getContainerByBot(botId);
    if (row?.status !== "deleting") return false;
    this.log(`${botId}: finishing the deletion of ${row.containerId} that was cut short`);
    await this.deleteLocked(botId);
    return true;
  }

  /** Marks the row and records the transition; a missing row is not an error here. */
  private async setStatus(containerId: string, status: ContainerStatus, type: string, payload: Record<string, unknown> = {}): Promise<void> {
    const row = await this.store.getContainer(containerId);
    if (row === undefined) {
      await this.store.recordEvent(containerId, type, { ...payload, status });
      return;
    }
    await this.store.setStatus(containerId, status, { type, payload });
  }

  private async startLocked(botId: string, containerId: string): Promise<void> {
    const existing = await this.cd.tasks.status(containerId);
    if (existing?.status === "running") {
      // Already running: make sure it is reachable (network and bridge) and say so.
      await this.ensureNetworkOfRunning(botId, containerId, existing.pid);
      await this.waitForBridgeOrFail(botId, containerId);
      const row = await this.store.getContainer(containerId);
      if (row?.status !== "running") await this.setStatus(containerId, "running", "running", { pid: existing.pid, adopted: true });
      return;
    }
    if (existing !== undefined) {
      // A stopped (or never started) task of an earlier run: clear it and its network.
      await this.cd.tasks.stop(containerId, 0);
    }
    await this.network.removeNetwork(containerId);
    this.bridges.evict(botId);
    fs.rmSync(path.join(this.socketDir(botId), "bridge.sock"), { force: true });
    if (!isLegacyContainerId(containerId)) {
      fs.mkdirSync(this.socketDir(botId), { recursive: true, mode: 0o750 });
    }

    const pid = await this.cd.createTask(containerId, { logPath: this.logPath(containerId) });
    let ip: string | undefined;
    try {
      const attachment = await this.network.setupNetwork(containerId, `/proc/${pid}/ns/net`);
      ip = attachment.ip;
    } catch (err) {
      await this.undoTask(containerId, "network setup failed");
      await this.setStatus(containerId, "error", "start_failed", { stage: "network", error: describeError(err) });
      throw new WorkspaceError("network", `workspace ${containerId} not started: ${describeError(err)}`, { cause: err });
    }
    try {
      await this.cd.tasks.start(containerId);
    } catch (err) {
      await this.undoTask(containerId, "Tasks.Start failed");
      await this.setStatus(containerId, "error", "start_failed", { stage: "start", error: describeError(err) });
      throw err;
    }
    this.setRoute(botId, containerId, ip);
    this.bridges.evict(botId);
    await this.waitForBridgeOrFail(botId, containerId, { undo: true });
    await this.setStatus(containerId, "running", "started", { pid, ip: ip ?? null, legacy: isLegacyContainerId(containerId) });
  }

  /** Kills and deletes the task, removes its network; failures are logged (the original error is what the caller gets). */
  private async undoTask(containerId: string, why: string): Promise<void> {
    await this.cd.tasks.stop(containerId, 0).catch((e: unknown) => this.log(`${containerId}: removing the task after "${why}": ${describeError(e)}`));
    await this.network.removeNetwork(containerId).catch((e: unknown) => this.log(`${containerId}: removing the network after "${why}": ${describeError(e)}`));
  }

  private async waitForBridgeOrFail(botId: string, containerId: string, opts: { undo?: boolean } = {}): Promise<void> {
    try {
      await this.waitForBridge(botId, containerId);
    } catch (err) {
      if (opts.undo) await this.undoTask(containerId, "the bridge did not answer");
      await this.setStatus(containerId, "error", "start_failed", { stage: "bridge", error: describeError(err) });
      throw err;
    }
  }

  /** Bounded wait until the bridge answers Info; then the protocol version must match the bundle's. */
  private async waitForBridge(botId: string, containerId: string): Promise<void> {
    const timeoutMs = this.options.readyTimeoutMs ?? 15_000;
    const deadline = Date.now() + timeoutMs;
    const target = await this.bridgeTarget(botId);
    let last: unknown;
    while (Date.now() < deadline) {
      if (target.kind === "unix" && !fs.existsSync(target.socketPath)) {
        await sleep(20);
        continue;
      }
      // A fresh channel per probe: grpc-js backs off reconnecting a channel that failed.
      const probe = new BridgeClient(targetAddress(target), {
        defaultTimeoutMs: Math.max(200, Math.min(3_000, deadline - Date.now())),
        channelOptions: { "grpc.use_local_subchannel_pool": 1 },
      });
      try {
        const info = await probe.info();
        const expected = this.readContract().protocolVersion;
        if (info.protocolVersion !== expected) {
          throw new WorkspaceError(
            "protocol_mismatch",
            `agent of ${containerId} speaks protocol ${info.protocolVersion}, the runtime bundle's contract says ${expected}`,
          );
        }
        return;
      } catch (err) {
        if (err instanceof WorkspaceError) throw err;
        last = err;
        await sleep(50);
      } finally {
        probe.close();
      }
    }
    throw new WorkspaceError("not_ready", `bridge of ${containerId} (${targetAddress(target)}) did not answer within ${timeoutMs} ms${last ? `: ${describeError(last)}` : ""}`, { cause: last });
  }

  /** CHECK the attachment of a running task; when it fails, set it up again. Legacy IPs are re-learned. */
  private async ensureNetworkOfRunning(botId: string, containerId: string, pid: number): Promise<"ok" | "renetworked"> {
    const netns = `/proc/${pid}/ns/net`;
    let outcome: "ok" | "renetworked" = "ok";
    let ip = this.network.cachedAttachment(containerId)?.ip;
    try {
      if (ip === undefined) throw new Error("no cached attachment");
      await this.network.checkNetwork(containerId, netns);
    } catch (err) {
      this.log(`${containerId}: network check failed (${describeError(err)}); setting it up again`);
      try {
        ip = (await this.network.setupNetwork(containerId, netns)).ip;
      } catch (setupErr) {
        await this.setStatus(containerId, "error", "network_failed", { error: describeError(setupErr) });
        throw new WorkspaceError("network", `workspace ${containerId} runs but its network cannot be set up: ${describeError(setupErr)}`, { cause: setupErr });
      }
      outcome = "renetworked";
    }
    const before = this.routes.get(botId);
    this.setRoute(botId, containerId, ip);
    const after = this.routes.get(botId);
    if (before && after && targetAddress(before) !== targetAddress(after)) this.bridges.evict(botId);
    return outcome;
  }

  private async stopLocked(botId: string, containerId: string, eventType: string): Promise<void> {
    this.bridges.evict(botId);
    const exit = await this.cd.tasks.stop(containerId, this.options.stopGraceMs ?? 10_000);
    await this.network.removeNetwork(containerId);
    fs.rmSync(path.join(this.socketDir(botId), "bridge.sock"), { force: true });
    await this.setStatus(containerId, "stopped", eventType, { exitStatus: exit?.exitStatus ?? null });
  }

  /** After UNAVAILABLE from the bridge: restart the task unless someone else already did. */
  private async reviveLocked(botId: string): Promise<void> {
    const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
    if (!(await this.containerExists(resolved.containerId))) {
      throw new WorkspaceError("not_found", `bot ${botId} has no workspace container (${resolved.containerId})`);
    }
    const row = await this.store.getContainerByBot(botId);
    if (row?.status === "stopped") throw new WorkspaceError("failed_precondition", `workspace ${resolved.containerId} is stopped; start it first`);
    if (row?.status === "deleting") throw new WorkspaceError("not_found", `workspace ${resolved.containerId} is being deleted`);
    const task = await this.cd.tasks.status(resolved.containerId);
    if (task?.status === "running") {
      try {
        await this.waitForBridgeWithin(botId, 2_000);
        return; // restarted meanwhile by another caller
      } catch {
        // running but deaf: restart below
      }
    }
    await this.store.recordEvent(resolved.containerId, "agent_unavailable", { botId, task: task?.status ?? "none", pid: task?.pid ?? null });
    if (task !== undefined) await this.replaceTaskLocked(botId, resolved.containerId);
    else await this.startLocked(botId, resolved.containerId);
  }

  /** A task that is there but useless: stop it (with grace) and its network, then start anew. */
  private async replaceTaskLocked(botId: string, containerId: string): Promise<void> {
    await this.cd.tasks.stop(containerId, this.options.stopGraceMs ?? 10_000);
    await this.network.removeNetwork(containerId);
    await this.startLocked(botId, containerId);
  }

  /** One Info probe with a short deadline (a fresh channel, no reconnect backoff). */
  private async waitForBridgeWithin(botId: string, ms: number): Promise<void> {
    const probe = new BridgeClient(targetAddress(await this.bridgeTarget(botId)), { defaultTimeoutMs: ms, channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
    try {
      await probe.info();
    } finally {
      probe.close();
    }
  }

  private async reconcileOneLocked(row: ContainerRow): Promise<ReconcileAction> {
    const { botId } = row;
    const containerId = row.containerId;
    if (await this.finishInterruptedDelete(botId)) return "deleted";
    if (!(await this.containerExists(containerId))) {
      await this.recoverOrphanedData(botId);
      await this.store.recordEvent(containerId, "rebuild", { botId, reason: "container missing" });
      if (isLegacyContainerId(containerId)) {
        // A legacy container is not re-created as legacy: the bot gets a current workspace.
        this.routes.delete(botId);
      }
      // A lost legacy container's rootfs (with its /data) carries over into the new workspace.
      const legacyRootfs = isLegacyContainerId(containerId) && (await this.cd.snapshots.isActive(containerId)) ? containerId : undefined;
      await this.createLocked(botId, { image: row.image, autoStart: row.autoStart, cdiDevices: row.cdiDevices }, legacyRootfs);
      if (row.status === "stopped") await this.setStatus(workspaceContainerId(botId), "stopped", "rebuilt_stopped");
      else await this.startLocked(botId, workspaceContainerId(botId));
      return "rebuilt";
    }
    await this.protectRootfs(containerId);
    const task = await this.cd.tasks.status(containerId);
    if (task?.status !== "running") {
      // Stopped on purpose (stop()): it stays stopped until started again.
      if (row.status === "stopped") return "stopped";
      await this.startLocked(botId, containerId);
      return "started";
    }
    const net = await this.ensureNetworkOfRunning(botId, containerId, task.pid);
    await this.waitForBridgeOrFail(botId, containerId);
    const fresh = await this.store.getContainer(containerId);
    if (fresh?.status !== "running") await this.setStatus(containerId, "running", "reconciled", { pid: task.pid, network: net });
    return net === "renetworked" ? "renetworked" : "healthy";
  }

  /** A workspace created before its rootfs was a GC root gets the label (best effort: logged on failure). */
  private async protectRootfs(containerId: string): Promise<void> {
    try {
      const info = await this.cd.containers.get(containerId);
      if (!info.snapshotKey) return;
      const opts = { snapshotter: info.snapshotter || this.cd.snapshots.snapshotter };
      const snap = await this.cd.snapshots.stat(info.snapshotKey, opts);
      if (snap.kind === "active" && snap.labels[GC_ROOT_LABEL] === undefined) {
        await this.cd.snapshots.setLabels(info.snapshotKey, { [GC_ROOT_LABEL]: new Date().toISOString() }, opts);
      }
    } catch (err) {
      this.log(`${containerId}: could not mark its rootfs as a GC root: ${describeError(err)}`);
    }
  }

  private async statusUnlocked(botId: string): Promise<WorkspaceStatus> {
    const resolved = await resolveContainerId(botId, { store: this.store, containerd: this.cd });
    const row = await this.store.getContainerByBot(botId);
    const exists = await this.containerExists(resolved.containerId);
    const task = exists ? await this.cd.tasks.status(resolved.containerId) : undefined;
    const route = this.routes.get(botId);
    const hasPreservedData =
      (await this.store.listSnapshots(resolved.containerId)).length > 0 ||
      (!exists && (await this.cd.snapshots.exists(resolved.containerId)));
    return {
      hasPreservedData,
      botId,
      containerId: resolved.containerId,
      row: row?.status === "deleted" ? undefined : row,
      containerExists: exists,
      task: task?.status ?? "none",
      pid: task?.pid,
      legacy: resolved.legacy,
      bridge: route ? targetAddress(route) : `unix:${this.socketPath(botId)}`,
      ip: resolved.legacy ? this.network.cachedAttachment(resolved.containerId)?.ip : undefined,
    };
  }
}
