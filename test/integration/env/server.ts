// The real orchestrator process for API tests: `bin/memoh-workspace.mjs serve` against a
// private containerd (with the test images), real CNI plugins on an own bridge, and the
// embedded PGlite under its data root (or PostgreSQL in a private schema). Tests talk to
// it over real HTTP on 127.0.0.1.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { deleteLink } from "../../../host/network/links.js";
import { WorkspaceNetwork } from "../../../host/network/network.js";
import { dropPostgresSchema } from "../../../host/store/db.js";
import { startContainerd, type ContainerdEnv } from "./containerd.js";
import { importTestImages } from "./images.js";
import { DEFAULT_RUNTIME_DIR, requireRuntimeBundle } from "./container.js";
import { DATABASE_URL } from "./workspace.js";
import { removeDataRoot } from "./data-root.js";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const CLI = path.join(REPO_ROOT, "bin", "memoh-workspace.mjs");

export interface ServerEnv {
  url: string;
  adminToken: string;
  dataRoot: string;
  env: ContainerdEnv;
  images: { busybox: string; glibc: string };
  /** The environment the server runs with (for CLI processes and restarts). */
  processEnv: NodeJS.ProcessEnv;
  /** What the server printed. */
  output(): string;
  /** The server process's pid (the node process serving, for `serve`). */
  pid(): number | undefined;
  /** Stops the server process (SIGTERM), keeps containerd and the data. */
  stopServer(): Promise<void>;
  /** Starts the server process again on the same port and data. */
  startServer(): Promise<void>;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export interface ServerEnvOptions {
  postgres?: boolean;
  extraEnv?: Record<string, string>;
  /** How the server is started (default `node bin/memoh-workspace.mjs serve`), run in the repository's root. */
  command?: { file: string; args: string[] };
  /** Remove these variables from the server's environment (to exercise defaults). */
  unset?: string[];
}

export async function startServerEnv(opts: ServerEnvOptions = {}): Promise<ServerEnv> {
  requireRuntimeBundle();
  const env = await startContainerd();
  const dataRoot = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-api-"));
  const bridge = `mab${randomBytes(4).toString("hex")}`;
  const prefix = `10.212.${randomInt(0, 250)}`;
  const schema = `api_${process.pid}_${randomBytes(3).toString("hex")}`;
  let child: ChildProcess | undefined;
  let output = "";
  let images: { busybox: string; glibc: string };
  const port = await freePort();
  try {
    images = await importTestImages(env);
  } catch (err) {
    await env.stop();
    throw err;
  }
  // The network list the server loads (written here: its bridge and subnet are this test's own).
  const confDir = path.join(dataRoot, "cni", "conf");
  fs.mkdirSync(confDir, { recursive: true });
  fs.writeFileSync(
    path.join(confDir, "memoh-cni.conflist"),
    JSON.stringify({
      cniVersion: "1.0.0",
      name: "memoh-cni",
      plugins: [
        { type: "bridge", bridge, isGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: "host-local", ranges: [[{ subnet: `${prefix}.0/24` }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: path.join(dataRoot, "cni", "ipam") } },
        { type: "portmap", capabilities: { portMappings: true } },
      ],
    }),
  );
  const processEnv: NodeJS.ProcessEnv = {
    ...process.env,
    MEMOH_LISTEN: `127.0.0.1:${port}`,
    MEMOH_DATA_ROOT: dataRoot,
    MEMOH_CONTAINERD_ADDRESS: env.address,
    MEMOH_NAMESPACE: env.namespace,
    MEMOH_RUNC_ROOT: env.runcRoot,
    MEMOH_RUNTIME_PATH: DEFAULT_RUNTIME_DIR,
    MEMOH_IMAGE: images.busybox,
    MEMOH_PULL_POLICY: "if_not_present",
    MEMOH_CNI_CONF_DIR: confDir,
    MEMOH_URL: `http://127.0.0.1:${port}`,
    ...(opts.postgres ? { DATABASE_URL, MEMOH_DB_SCHEMA: schema } : {}),
    ...opts.extraEnv,
  };
  delete processEnv.MEMOH_ADMIN_TOKEN;
  for (const name of opts.unset ?? []) delete processEnv[name];
  if (!opts.postgres) delete processEnv.DATABASE_URL;

  const startServer = async () => {
    const from = output.length;
    const command = opts.command ?? { file: process.execPath, args: [CLI, "serve"] };
    const proc = spawn(command.file, command.args, { env: processEnv, cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"], detached: opts.command !== undefined });
    child = proc;
    proc.stdout!.on("data", (d: Buffer) => (output += d.toString()));
    proc.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const deadline = Date.now() + 180_000;
    while (!output.slice(from).includes("serving on")) {
      if (proc.exitCode !== null) throw new Error(`the server exited (${proc.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`the server did not start within 180 s:\n${output}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const stopServer = async () => {
    const proc = child;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    // A command of our own (npm run up) runs in a process group of its own: signal all of it.
    const kill = (signal: NodeJS.Signals) => (opts.command !== undefined && proc.pid ? process.kill(-proc.pid, signal) : proc.kill(signal));
    kill("SIGTERM");
    const timer = setTimeout(() => kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  };
  const close = async () => {
    // Workspaces the tests left are deleted through the API (tasks, network, rows).
    if (child && child.exitCode === null) {
      const adminToken = fs.readFileSync(path.join(dataRoot, "admin-token"), "utf8").trim();
      const auth = { authorization: `Bearer ${adminToken}` };
      const list = await request(`http://127.0.0.1:${port}/bots?limit=1000`, { headers: auth }).then((r) => r.body.json() as Promise<{ workspaces?: Array<{ bot_id: string }> }>).catch(() => ({ workspaces: [] }));
      for (const w of list.workspaces ?? []) await request(`http://127.0.0.1:${port}/bots/${w.bot_id}/container`, { method: "DELETE", headers: auth }).then((r) => r.body.dump()).catch(() => undefined);
    }
    await stopServer().catch(() => undefined);
    await env.stop().catch(() => undefined);
    // What the server set up on the host for its network: the subnet's masquerade rule, the bridge.
    await WorkspaceNetwork.open({ confDir, cacheDir: path.join(dataRoot, "cni", "cache"), writeDefault: false, log: () => undefined })
      .removeHostNetworking()
      .catch(() => undefined);
    await deleteLink(bridge).catch(() => undefined);
    if (opts.postgres) await dropPostgresSchema(DATABASE_URL, schema).catch(() => undefined);
    removeDataRoot(dataRoot);
  };
  try {
    await startServer();
  } catch (err) {
    await close();
    throw err;
  }
  const adminToken = fs.readFileSync(path.join(dataRoot, "admin-token"), "utf8").trim();
  return {
    url: `http://127.0.0.1:${port}`,
    adminToken,
    dataRoot,
    env,
    images: images!,
    processEnv,
    output: () => output,
    pid: () => child?.pid,
    stopServer,
    startServer,
    close,
  };
}
