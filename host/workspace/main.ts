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
import { loadConfig } from "../config.js";
import { loadDockerConfig } from "../containerd/registry-auth.js";
import { ContainerdClient } from "../containerd/client.js";
import { WorkspaceNetwork } from "../network/network.js";
import { openStore } from "../store/store.js";
import { describeError } from "./errors.js";
import { WorkspaceManager } from "./manager.js";
import { WorkspaceSupervisor } from "./supervisor.js";
import type { MaintenanceOptions } from "./maintenance.js";

/** How often task logs are rotated and lifecycle events pruned. */
const MAINTENANCE_INTERVAL_MS = 60_000;

export interface ManagerProcess {
  manager: WorkspaceManager;
  containerd: ContainerdClient;
  maintenance: MaintenanceOptions;
  close(): Promise<void>;
}

function emit(event: string, data: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ event, ...data })}\n`);
}

export async function startManagerProcess(opts: { env?: NodeJS.ProcessEnv; argv?: readonly string[]; cwd?: string } = {}): Promise<ManagerProcess> {
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
      defaultLimits: cfg.limits,
      log: (message) => emit("log", { message }),
    });
    return {
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

async function main(): Promise<void> {
  const proc = await startManagerProcess();
  let reconciling: Promise<void> = Promise.resolve();
  const reconcile = () => {
    // After a failed sweep the next one still runs.
    reconciling = reconciling.catch(() => undefined).then(async () => {
      const t0 = Date.now();
      const entries = await proc.manager.reconcile();
      emit("reconciled", { entries, ms: Date.now() - t0 });
    });
    reconciling.catch((err: unknown) => emit("error", { message: `reconcile: ${describeError(err)}` }));
  };
  const supervisor = new WorkspaceSupervisor(proc.manager, proc.containerd.conn, {
    onResubscribed: reconcile,
    onEvent: (e) => emit("supervisor", { ...e }),
  });
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    void (async () => {
      // Let a running reconcile finish (its steps hold workspace locks), then leave the workspaces running.
      await reconciling.catch(() => undefined);
      await supervisor.close();
      await proc.close();
      emit("closed", { signal });
      process.exit(0);
    })();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGHUP", reconcile);
  const maintain = () => {
    proc.manager.maintain(proc.maintenance).then(
      (r) => {
        if (r.logsRotated.length > 0 || r.eventsPruned > 0 || r.errors.length > 0) emit("maintenance", { ...r });
      },
      (err: unknown) => emit("error", { message: `maintenance: ${describeError(err)}` }),
    );
  };
  emit("ready", { pid: process.pid });
  reconcile();
  supervisor.start();
  maintain();
  // Also keeps the process alive until a signal.
  setInterval(maintain, MAINTENANCE_INTERVAL_MS);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    emit("error", { message: describeError(err) });
    process.exit(1);
  });
}
