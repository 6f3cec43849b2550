// `npm run up`, before the orchestrator starts: make sure containerd answers
// (start it when it is not running) and that the default workspace image exists
// in its namespace (built from this machine's files and imported: works offline).
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ContainerdConnection } from "../host/containerd/connection.js";
import { ensureNamespace } from "../host/containerd/namespaces.js";
import { getImage } from "../host/containerd/images.js";
import { importOciLayout } from "../host/containerd/import.js";
import { buildHostImage } from "./image-builder.js";
import { DEFAULT_IMAGE } from "../host/config.js";


function log(message: string): void {
  process.stderr.write(`memoh-workspace: ${message}\n`);
}

async function answers(conn: ContainerdConnection): Promise<boolean> {
  try {
    await conn.ready(2_000);
    return true;
  } catch {
    return false;
  }
}

/** Starts containerd in the background (its log under the data root) when nobody serves the socket. */
async function ensureContainerd(address: string, dataRoot: string, namespace: string): Promise<ContainerdConnection> {
  const conn = new ContainerdConnection({ address, namespace });
  if (await answers(conn)) return conn;
  if (address !== "/run/containerd/containerd.sock") {
    throw new Error(`containerd does not answer at ${address}; start it, or unset MEMOH_CONTAINERD_ADDRESS to let npm run up start the system one`);
  }
  const logPath = path.join(dataRoot, "containerd.log");
  log(`starting containerd (log: ${logPath})`);
  const out = fs.openSync(logPath, "a");
  const child = spawn("containerd", [], { detached: true, stdio: ["ignore", out, out] });
  child.unref();
  for (let i = 0; i < 50; i++) {
    await sleep(200);
    if (await answers(conn)) return conn;
  }
  throw new Error(`containerd did not come up within 10 s; see ${logPath}`);
}

export async function prepareHost(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const dataRoot = env.MEMOH_DATA_ROOT || "/var/lib/memoh";
  const address = env.MEMOH_CONTAINERD_ADDRESS || "/run/containerd/containerd.sock";
  const namespace = env.MEMOH_NAMESPACE || "memoh";
  fs.mkdirSync(dataRoot, { recursive: true });
  const conn = await ensureContainerd(address, dataRoot, namespace);
  try {
    await ensureNamespace(conn, namespace);
    if (env.MEMOH_IMAGE && env.MEMOH_IMAGE !== DEFAULT_IMAGE) return; // pulled by the orchestrator per its pull policy
    if (await getImage(conn, DEFAULT_IMAGE)) return;
    const tarPath = path.join(dataRoot, "images", "workspace.oci.tar");
    fs.mkdirSync(path.dirname(tarPath), { recursive: true });
    log(`building the default workspace image ${DEFAULT_IMAGE} from this machine's files`);
    await buildHostImage("glibc", DEFAULT_IMAGE, tarPath);
    const imported = await importOciLayout(conn, tarPath, { snapshotter: env.MEMOH_SNAPSHOTTER || "overlayfs" });
    log(`imported ${imported.map((i) => i.image.name).join(", ")}`);
  } finally {
    conn.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  prepareHost().catch((err: unknown) => {
    log(err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
}
