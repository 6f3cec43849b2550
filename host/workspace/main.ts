// The manager as a process: opens the store, containerd and the network from the
// documented environment, reconciles at startup (and again on SIGHUP), and runs the
// supervisor, which restarts a workspace whose task exits on its own (and reconciles
// again after containerd came back, for exits it could not see).
// SIGTERM/SIGINT close connections and exit 0 WITHOUT stopping any workspace: the
// containerd shims keep the tasks running, and the next process re-adopts them.
// Each step prints one JSON line on stdout ({"event": "..."}), which tests read.
//
//   node --import tsx host/workspace/main.ts
//
// Configuration: host/config.ts (`--config <file>`, ./memoh-workspace.toml, and the
// MEMOH_* / DATABASE_URL variables listed in README.md "Configuration"); plus TZ, and for
// private test daemons MEMOH_DB_SCHEMA (PostgreSQL schema) and MEMOH_RUNC_ROOT
// (runc --root of the shims).
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadConfig, type Config } from "../config.js";
import { loadDockerConfig } from "../containerd/registry-auth.js";
import { ContainerdClient } from "../containerd/client.js";
import { WorkspaceNetwork } from "../network/network.js";
import { openStore, type SqlStore } from "../store/store.js";
import { describeError } from "./errors.js";
import { WorkspaceManager, type WorkspaceManagerOptions } from "./manager.js";
import { WorkspaceSupervisor } from "./supervisor.js";
import type { MaintenanceOptions } from "./maintenance.js";

/** How often task logs are rotated and lifecycle events pruned. */
const MAINTENANCE_INTERVAL_MS = 60_000;

export interface ManagerProcess {
  config: Config;
  store: SqlStore;
  manager: WorkspaceManager;
  containerd: ContainerdClient;
  maintenance: MaintenanceOptions;
  close(): Promise<void>;
}

function emit(event: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
}

export interface ManagerProcessOptions {
  env?: NodeJS.ProcessEnv;
  argv?: readonly string[];
  cwd?: string;
  /** Observers the API's metrics attach to the manager. */
  hooks?: Pick<WorkspaceManagerOptions, "onBridgeCall" | "onPullProgress">;
}

export async function startManagerProcess(opts: ManagerProcessOptions = {}): Promise<ManagerProcess> {
  const env = opts.env ?? process.env;
  const cfg = loadConfig({ env, argv: opts.argv ?? process.argv.slice(2), ...(opts.cwd ? { cwd: opts.cwd } : {}) });
  const store = await openStore({
    dataRoot: cfg.dataRoot,
    ...(cfg.databaseUrl ? { databaseUrl: cfg.databaseUrl } : {}),
    ...(env.MEMOH_DB_SCHEMA ? { schema: env.MEMOH_DB_SCHEMA } : {}),
  });
  const containerd = new ContainerdClient({
    address: cfg.containerdAddress,
    namespace: cfg.namespace,
    snapshotter: cfg.snapshotter,
    ...(env.MEMOH_RUNC_ROOT ? { runcOptions: { root: env.MEMOH_RUNC_ROOT } } : {}),
  });
  try {
    await containerd.ready();
    await containerd.ensureNamespace();
    const network = WorkspaceNetwork.open({
      confDir: cfg.cniConfDir,
      pluginDirs: cfg.cniBinDirs,
      cacheDir: path.join(cfg.dataRoot, "cni", "cache"),
      defaults: { ipamDataDir: path.join(cfg.dataRoot, "cni", "ipam"), firewall: cfg.cniFirewall },
      isolation: cfg.cniIsolation,
      blockHost: cfg.cniBlockHost,
      blockMetadata: cfg.cniBlockMetadata,
      log: (message) => emit("log", { message: `network: ${message}` }),
    });
    const manager = new WorkspaceManager({
      containerd,
      store,
      network,
      dataRoot: cfg.dataRoot,
      runtimePath: cfg.runtimePath,
      defaultImage: cfg.image,
      pullPolicy: cfg.pullPolicy,
      // Registry credentials from a Docker-style config.json (MEMOH_REGISTRY_AUTH) and extra
      // trusted CAs from a PEM bundle (MEMOH_REGISTRY_CA; loadConfig checked it holds certificates).
      // Hosts allowed plain HTTP (MEMOH_REGISTRY_INSECURE) besides loopback.
      registry: {
        ...(cfg.registryAuth ? { credentials: loadDockerConfig(cfg.registryAuth) } : {}),
        ...(cfg.registryCa ? { ca: [fs.readFileSync(cfg.registryCa, "utf8")] } : {}),
        insecureHosts: cfg.registryInsecure,
      },
      ...(env.TZ ? { timezone: env.TZ } : {}),
      lockTimeoutMs: cfg.lockTimeoutMs,
      jobs: { maxRuntimeMs: cfg.jobMaxRuntimeMs, retentionMs: cfg.jobRetentionMs },
      ...opts.hooks,
      defaultLimits: cfg.limits,
      archiveLimits: { maxBytes: cfg.importMaxBytes, maxEntries: cfg.importMaxEntries },
      log: (message) => emit("log", { message }),
    });
    return {
      config: cfg,
      store,
      manager,
      containerd,
      maintenance: { taskLogMaxBytes: cfg.taskLogMaxBytes, taskLogKeep: cfg.taskLogKeep, eventsKeep: cfg.eventsKeep },
      async close() {
        await manager.close();
        containerd.close();
        await store.close();
      },
    };
  } catch (err) {
    containerd.close();
    await store.close();
    throw err;
  }
}

/** The background work of a manager process: reconcile (now and on demand), the supervisor, maintenance. */
export interface ManagerLoops {
  reconcile(): void;
  /** Lets a running reconcile finish (its steps hold workspace locks), stops the supervisor and timers. */
  close(): Promise<void>;
}

export function startManagerLoops(proc: ManagerProcess, log: (event: string, data?: Record<string, unknown>) => void = emit): ManagerLoops {
  let reconciling: Promise<void> = Promise.resolve();
  const reconcile = () => {
    // After a failed sweep the next one still runs.
    reconciling = reconciling.catch(() => undefined).then(async () => {
      const t0 = Date.now();
      const entries = await proc.manager.reconcile();
      log("reconciled", { entries, ms: Date.now() - t0 });
    });
    reconciling.catch((err: unknown) => log("error", { message: `reconcile: ${describeError(err)}` }));
  };
  const supervisor = new WorkspaceSupervisor(proc.manager, proc.containerd.conn, {
    onResubscribed: reconcile,
    onEvent: (e) => log("supervisor", { ...e }),
  });
  const maintain = () => {
    proc.manager.maintain(proc.maintenance).then(
      (r) => {
        if (r.logsRotated.length > 0 || r.eventsPruned > 0 || r.errors.length > 0) log("maintenance", { ...r });
      },
      (err: unknown) => log("error", { message: `maintenance: ${describeError(err)}` }),
    );
  };
  reconcile();
  supervisor.start();
  maintain();
  const timer = setInterval(maintain, MAINTENANCE_INTERVAL_MS);
  return {
    reconcile,
    async close() {
      clearInterval(timer);
      await reconciling.catch(() => undefined);
      await supervisor.close();
    },
  };
}

async function main(): Promise<void> {
  const proc = await startManagerProcess();
  emit("ready", { pid: process.pid });
  const loops = startManagerLoops(proc);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    void (async () => {
      await loops.close();
      await proc.close();
      emit("closed", { signal });
      process.exit(0);
    })();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGHUP", loops.reconcile);
  // Keeps the process alive until a signal.
  setInterval(() => undefined, 1 << 30);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    emit("error", { message: describeError(err) });
    process.exit(1);
  });
}
