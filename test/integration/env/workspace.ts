// A workspace manager on real daemons for integration tests: a private containerd with
// the test images, the store on PostgreSQL (a private schema per run), real CNI plugins
// on an own bridge and /24, and helpers that compare the row with what containerd and
// the network really hold. Traffic goes only to 127.0.0.1 and to the test's containers.
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ContainerdClient } from "../../../host/containerd/client.js";
import { WorkspaceNetwork, type NetworkOptions } from "../../../host/network/network.js";
import { deleteLink } from "../../../host/network/links.js";
import { dropPostgresSchema } from "../../../host/store/db.js";
import { openStore, type SqlStore } from "../../../host/store/store.js";
import { WorkspaceManager, type WorkspaceManagerOptions } from "../../../host/workspace/manager.js";
import { startContainerd, type ContainerdEnv } from "./containerd.js";
import { importTestImages } from "./images.js";
import { DEFAULT_RUNTIME_DIR, requireRuntimeBundle } from "./container.js";
import { removeDataRoot } from "./data-root.js";

export const DATABASE_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export interface WorkspaceFixture {
  env: ContainerdEnv;
  cd: ContainerdClient;
  store: SqlStore;
  net: WorkspaceNetwork;
  dataRoot: string;
  images: { busybox: string; glibc: string };
  bridge: string;
  /** The first three octets of the test /24. */
  prefix: string;
  logs: string[];
  /** A manager over the fixture's daemons; `overrides` replace options (the network, limits…). */
  manager(overrides?: Partial<WorkspaceManagerOptions>): WorkspaceManager;
  /** A bot id unique to this run. */
  botName(name: string): string;
  /** Row and containerd agree: running ⇔ a running task; stopped ⇔ no task; absent ⇔ no row and no container. */
  assertRowMatchesLive(botId: string, expected: "running" | "stopped" | "absent"): Promise<void>;
  /** Leases, cached results and bridge ports belong to running tasks only. */
  assertNoNetworkLeaks(): Promise<void>;
  close(): Promise<void>;
}

export interface WorkspaceFixtureOptions {
  network?: Partial<NetworkOptions>;
  /** The embedded PGlite under the fixture's data root instead of PostgreSQL (benchmarks). */
  embeddedStore?: boolean;
}

export async function startWorkspaceFixture(opts: WorkspaceFixtureOptions = {}): Promise<WorkspaceFixture> {
  requireRuntimeBundle();
  const env = await startContainerd();
  const managers: WorkspaceManager[] = [];
  let store: SqlStore | undefined;
  let net: WorkspaceNetwork | undefined;
  let cd: ContainerdClient | undefined;
  const schema = `wsf_${process.pid}_${randomBytes(3).toString("hex")}`;
  const bridge = `mwf${randomBytes(4).toString("hex")}`;
  const prefix = `10.213.${randomInt(0, 250)}`;
  const dataRoot = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-wsf-"));
  const logs: string[] = [];
  const close = async () => {
    try {
      for (const m of managers) {
        for (const ws of await m.list().catch(() => [])) await m.delete(ws.botId).catch(() => {});
        await m.close();
      }
      if (net) {
        await net.removeHostNetworking().catch(() => {});
        await deleteLink(bridge).catch(() => {});
      }
      cd?.close();
      await store?.close();
      if (!opts.embeddedStore) await dropPostgresSchema(DATABASE_URL, schema).catch(() => {});
    } finally {
      await env.stop();
      removeDataRoot(dataRoot);
    }
  };
  try {
    const images = await importTestImages(env);
    store = opts.embeddedStore ? await openStore({ dataRoot }) : await openStore({ databaseUrl: DATABASE_URL, dataRoot, schema });
    net = WorkspaceNetwork.open({
      confDir: path.join(dataRoot, "cni", "conf"),
      cacheDir: path.join(dataRoot, "cni", "cache"),
      defaults: { bridge, subnet: `${prefix}.0/24`, ipamDataDir: path.join(dataRoot, "cni", "ipam") },
      isolation: true,
      pluginTimeoutMs: 20_000,
      log: (m) => logs.push(`network: ${m}`),
      ...opts.network,
    });
    cd = new ContainerdClient({ address: env.address, namespace: env.namespace, runcOptions: { root: env.runcRoot } });
    await cd.ready();
    const fixture: WorkspaceFixture = {
      env,
      cd,
      store,
      net,
      dataRoot,
      images,
      bridge,
      prefix,
      logs,
      manager(overrides = {}) {
        const m = new WorkspaceManager({
          containerd: cd!,
          store: store!,
          network: net!,
          dataRoot,
          runtimePath: DEFAULT_RUNTIME_DIR,
          defaultImage: images.busybox,
          pullPolicy: "never",
          stopGraceMs: 2_000,
          readyTimeoutMs: 15_000,
          log: (message) => logs.push(message),
          ...overrides,
        });
        managers.push(m);
        return m;
      },
      botName: (name) => `${name}-${randomBytes(3).toString("hex")}`,
      async assertRowMatchesLive(botId, expected) {
        const row = await store!.getContainerByBot(botId);
        const containerId = row?.containerId ?? `workspace-${botId}`;
        const task = await cd!.tasks.status(containerId);
        const containers = (await cd!.containers.list()).map((c) => c.id);
        if (expected === "absent") {
          assert.equal(row, undefined, `row of ${botId} still there`);
          assert.ok(!containers.includes(containerId), `container ${containerId} still there`);
          assert.equal(task, undefined);
          return;
        }
        assert.ok(row, `no row for ${botId}`);
        assert.equal(row.status, expected, `row status of ${botId}`);
        assert.ok(containers.includes(containerId));
        if (expected === "running") assert.equal(task?.status, "running");
        else assert.equal(task, undefined, `task of ${containerId} left behind: ${task?.status}`);
      },
      async assertNoNetworkLeaks() {
        const running = new Set((await cd!.tasks.list()).filter((t) => t.status === "running").map((t) => t.id));
        for (const owner of net!.leaseOwners()) assert.ok(running.has(owner), `IP lease of ${owner} leaked`);
        for (const id of net!.runner.cachedContainerIds("eth0")) assert.ok(running.has(id), `CNI cache of ${id} leaked`);
        const ports = await net!.bridgePorts();
        assert.equal(ports.length, running.size, `bridge ports ${ports.join(",")} vs running ${[...running].join(",")}`);
      },
      close,
    };
    return fixture;
  } catch (err) {
    await close();
    throw err;
  }
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}
