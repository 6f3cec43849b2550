// What every lifecycle step of the workspace manager shares: its dependencies
// (containerd, the store, the network, the bridge clients), its options, the bridge
// route of each bot, and small helpers that read state. The steps themselves live in
// one module each (create.ts, start.ts, stop.ts, delete.ts, revive.ts, reconcile.ts,
// health.ts, status.ts) as functions of this context; the manager (manager.ts) is the
// facade that validates, takes the bot's lock and calls them.
import fs from "node:fs";
import path from "node:path";
import type { ContainerdClient } from "../containerd/client.js";
import { isNotFound } from "../containerd/errors.js";
import type { PullPolicy } from "../containerd/pull.js";
import type { RegistryOptions } from "../containerd/registry.js";
import type { CdiRegistry } from "../containerd/cdi.js";
import type { WorkspaceNetwork } from "../network/network.js";
import type { ContainerRow, ContainerStatus, Store } from "../store/types.js";
import { isLegacyContainerId, validateBotId } from "./botid.js";
import { type BridgeClientSource, type BridgeTarget } from "./bridge-source.js";
import { LEGACY_BRIDGE_PORT } from "../../proto/constants.js";
import { WorkspaceError, describeError } from "./errors.js";
import { resolveContainerId, type ResolvedContainer } from "./resolve.js";
import { KeyedLock } from "./lock.js";
import * as paths from "./paths.js";
import { DEFAULT_LIMITS, type WorkspaceLimits } from "./limits.js";
import type { AgentJobLimits } from "./container-spec.js";

/** The lock key of a bot: every state change of its workspace holds it. */
export const lockKey = (botId: string) => `bot:${botId}`;

/** Default bound on waiting for a bot's lock. */
export const DEFAULT_LOCK_TIMEOUT_MS = 120_000;

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
  /** Limits of the agents' background jobs, given to new workspaces (default: the agent's own, 30 min and 1 h). */
  jobs?: AgentJobLimits;
  /** SIGTERM → SIGKILL grace of stop (default 10 s). */
  stopGraceMs?: number;
  /** How long start waits for the bridge to answer Info (default 15 s). */
  readyTimeoutMs?: number;
  /** How long a caller waits for a bot's lock before "unavailable" (default 120 s). */
  lockTimeoutMs?: number;
  cdiRegistry?: CdiRegistry;
  /** Limits of a workspace created without its own (default 2 GiB, 2 CPUs, 1024 pids). */
  defaultLimits?: WorkspaceLimits;
  /** Default: the bridge pool (host/bridge/pool.ts) over bridgeTarget(). */
  bridges?: BridgeClientSource;
  onPullProgress?: (botId: string, digest: string, offset: number, total: number) => void;
  /** Every bridge call made through call(): its method, duration and whether it succeeded (metrics). */
  onBridgeCall?: (rpc: string, seconds: number, ok: boolean) => void;
  log?: (message: string) => void;
  /** Caps of an imported archive (content bytes, entries). */
  archiveLimits?: { maxBytes: number; maxEntries: number };
}

export interface Contract {
  protocolVersion: number;
  bundleVersion: string;
}

export class WorkspaceContext {
  readonly cd: ContainerdClient;
  readonly store: Store;
  readonly network: WorkspaceNetwork;
  readonly log: (message: string) => void;
  /** The bridge route of each bot seen so far (legacy bots: TCP at their CNI IP). */
  readonly routes = new Map<string, BridgeTarget>();
  readonly lock = new KeyedLock();
  /** Bots whose row is marked "deleting" (a deletion under way or cut short). */
  readonly rowsDeleting = new Set<string>();
  private contract: Contract | undefined;

  constructor(
    readonly options: WorkspaceManagerOptions,
    readonly bridges: BridgeClientSource,
  ) {
    this.cd = options.containerd;
    this.store = options.store;
    this.network = options.network;
    this.log = options.log ?? ((m) => console.warn(`[workspace] ${m}`));
  }

  /**
   * Runs `fn` under the bot's lock. The caller stops waiting when `signal` fires (the
   * operation still runs to its end) or when the lock is not free within the lock
   * timeout ("unavailable"; the operation is then not run).
   */
  locked<T>(botId: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return this.lock.run(lockKey(botId), fn, {
      ...(signal ? { signal } : {}),
      timeoutMs: this.options.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
      onOrphanError: (err) => this.log(`${botId}: an operation whose caller went away failed: ${describeError(err)}`),
    });
  }

  get defaultLimits(): WorkspaceLimits {
    return this.options.defaultLimits ?? DEFAULT_LIMITS;
  }

  get stopGraceMs(): number {
    return this.options.stopGraceMs ?? 10_000;
  }

  socketDir(botId: string): string {
    return paths.socketDir(this.options.dataRoot, botId);
  }

  socketPath(botId: string): string {
    return paths.socketPath(this.options.dataRoot, botId);
  }

  logPath(containerId: string): string {
    return paths.logPath(this.options.dataRoot, containerId);
  }

  /** The bundle's workspace-contract.json (read once). */
  readContract(): Contract {
    if (this.contract) return this.contract;
    const file = path.join(this.options.runtimePath, "workspace-contract.json");
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch (err) {
      throw new WorkspaceError("internal", `cannot read the runtime bundle's contract ${file}: ${describeError(err)}`, { cause: err });
    }
    const p = parsed as { protocolVersion?: unknown; bundleVersion?: unknown };
    if (typeof p.protocolVersion !== "number") throw new WorkspaceError("internal", `${file} has no numeric protocolVersion`);
    this.contract = { protocolVersion: p.protocolVersion, bundleVersion: typeof p.bundleVersion === "string" ? p.bundleVersion : "" };
    return this.contract;
  }

  resolve(botId: string): Promise<ResolvedContainer> {
    return resolveContainerId(botId, { store: this.store, containerd: this.cd });
  }

  async containerExists(containerId: string): Promise<boolean> {
    try {
      await this.cd.containers.get(containerId);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** The bot's row unless it is gone ("deleted" rows count as gone). */
  async liveRow(botId: string): Promise<ContainerRow | undefined> {
    const row = await this.store.getContainerByBot(botId);
    return row?.status === "deleted" ? undefined : row;
  }

  /** Marks the row and records the transition; a missing row is not an error here. */
  async setStatus(containerId: string, status: ContainerStatus, type: string, payload: Record<string, unknown> = {}): Promise<void> {
    const row = await this.store.getContainer(containerId);
    if (row === undefined) {
      await this.store.recordEvent(containerId, type, { ...payload, status });
      return;
    }
    await this.store.setStatus(containerId, status, { type, payload });
  }

  /**
   * Where the bot's bridge listens: its socket, or <ip>:9090 for a legacy container.
   * Over TCP the agent's identity (Info) is only a claim, and host-local hands an IP
   * released by a stopped workspace to the next one it sets up: a legacy IP is dialled
   * only while the container's task runs with the attachment that IP came from.
   */
  async bridgeTarget(botId: string): Promise<BridgeTarget> {
    validateBotId(botId);
    const known = this.routes.get(botId);
    if (known?.kind === "unix") return known;
    const resolved = await this.resolve(botId);
    if (resolved.legacy) {
      const ip = await this.liveLegacyIp(resolved.containerId);
      if (ip === undefined) {
        this.routes.delete(botId);
        throw new WorkspaceError("unavailable", `legacy workspace ${resolved.containerId} has no running task with a known IP (start it or run reconcile)`);
      }
      if (known?.kind === "tcp" && known.host === ip) return known;
      await this.setRoute(botId, resolved.containerId, ip);
      return this.routes.get(botId)!;
    }
    return { kind: "unix", socketPath: this.socketPath(botId), workspaceId: resolved.containerId };
  }

  /** The IP of a legacy container's network while its running task is the one that network was set up for. */
  private async liveLegacyIp(containerId: string): Promise<string | undefined> {
    const task = await this.cd.tasks.status(containerId);
    if (task?.status !== "running" || !task.pid) return undefined;
    const cached = this.network.cachedAttachment(containerId);
    if (cached === undefined || cached.netns !== `/proc/${task.pid}/ns/net`) return undefined;
    return cached.ip;
  }

  /**
   * Removes the container's network and forgets the bot's route first: the IP goes
   * back to the pool and may be another workspace's a moment later.
   */
  async removeNetwork(botId: string, containerId: string): Promise<void> {
    this.routes.delete(botId);
    await this.network.removeNetwork(containerId);
  }

  /**
   * The route of a bot whose task was just started or checked. Every route names the
   * container whose agent must answer there (the pool checks it on every connection).
   */
  async setRoute(botId: string, containerId: string, ip: string | undefined): Promise<void> {
    if (isLegacyContainerId(containerId) && ip !== undefined) {
      const target: BridgeTarget = { kind: "tcp", host: ip, port: LEGACY_BRIDGE_PORT };
      const identity = await this.legacyIdentity(containerId);
      if (identity !== undefined) target.workspaceId = identity;
      this.routes.set(botId, target);
    } else {
      // Our workspaces: BRIDGE_WORKSPACE_ID, or (created before it existed) the hostname, is the container id.
      this.routes.set(botId, { kind: "unix", socketPath: this.socketPath(botId), workspaceId: containerId });
    }
  }

  /**
   * What the agent of a legacy container reports as its identity: the agent answers
   * BRIDGE_WORKSPACE_ID, else its hostname. Containers made by older systems may set
   * neither to anything we know; then the identity cannot be checked (undefined).
   */
  private async legacyIdentity(containerId: string): Promise<string | undefined> {
    const spec = (await this.cd.containers.get(containerId)).spec;
    const fromEnv = spec?.process.env.find((e) => e.startsWith("BRIDGE_WORKSPACE_ID="));
    if (fromEnv !== undefined) return fromEnv.slice("BRIDGE_WORKSPACE_ID=".length);
    return spec?.hostname || undefined;
  }
}
