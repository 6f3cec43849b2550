// Image pull benchmark: a ≥100 MB, 4-layer gzip image from a private registry
// on 127.0.0.1, pulled and unpacked by our client beside `ctr images pull
// --plain-http` of the same image. Every measurement gets a fresh private
// containerd (empty content store and snapshotter); best of 2 each.
// Run alone: `npx tsx scripts/bench/pull.ts`.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ContainerdConnection } from "../../host/containerd/connection.js";
import { pullImage } from "../../host/containerd/pull.js";
import { RegistryClient } from "../../host/containerd/registry.js";
import { startContainerd } from "../../test/integration/env/containerd.js";
import { buildLayer, buildOciImage, readOciLayout, writeOciLayout, type LayerEntry, type OciImage } from "../../test/integration/env/images.js";
import { startRegistry } from "../../test/integration/env/registry.js";
import type { Row } from "./stats.js";

const MiB = 1024 * 1024;
const LAYERS = 4;
const FILES_PER_LAYER = 7;
const FILE_BYTES = 4 * MiB;
const ROUNDS = 3;
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CACHE = path.join(repoRoot, ".tmp", "bench-pull", `big-${LAYERS}x${FILES_PER_LAYER}x${FILE_BYTES}.oci.tar`);

/** Random bytes do not compress: 4 layers × 28 MiB stay ≈ 112 MiB gzipped. Cached under .tmp/. */
async function bigImage(): Promise<OciImage> {
  if (fs.existsSync(CACHE)) {
    const [cached] = await readOciLayout(CACHE);
    if (cached) return cached;
  }
  const layers = [];
  for (let l = 0; l < LAYERS; l++) {
    const entries: LayerEntry[] = [{ path: `layer${l}`, type: "dir", mode: 0o755 }];
    for (let f = 0; f < FILES_PER_LAYER; f++) entries.push({ path: `layer${l}/blob${f}.bin`, type: "file", mode: 0o644, data: randomBytes(FILE_BYTES) });
    layers.push(await buildLayer(entries));
  }
  const image = buildOciImage("memoh.bench/big:latest", layers);
  await writeOciLayout([image], CACHE);
  return image;
}

async function timeOurs(ref: string): Promise<number> {
  const env = await startContainerd();
  const conn = new ContainerdConnection({ address: env.address, namespace: env.namespace });
  const registry = new RegistryClient();
  try {
    const t0 = performance.now();
    await pullImage(conn, ref, { registry, policy: "always" });
    return (performance.now() - t0) / 1000;
  } finally {
    await registry.close();
    conn.close();
    await env.stop();
  }
}

async function timeCtr(ref: string): Promise<number> {
  const env = await startContainerd();
  try {
    const t0 = performance.now();
    await env.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 300_000 });
    return (performance.now() - t0) / 1000;
  } finally {
    await env.stop();
  }
}

export async function benchPull(): Promise<Row[]> {
  const t0 = performance.now();
  const image = await bigImage();
  const prepared = (performance.now() - t0) / 1000;
  const bytes = [image.config, ...image.layers].reduce((a, b) => a + b.size, 0);
  const registry = await startRegistry();
  try {
    const ref = await registry.push(image, "bench/big", "v1");
    const ours: number[] = [];
    const ctr: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      ours.push(await timeOurs(ref));
      ctr.push(await timeCtr(ref));
    }
    const best = (xs: number[]) => Math.min(...xs);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const speed = best(ctr) / best(ours);
    process.stderr.write(
      `pull bench: image ${(bytes / MiB).toFixed(1)} MiB in ${LAYERS} layers (prepared in ${prepared.toFixed(1)} s); ours ${ours.map((s) => s.toFixed(2)).join(", ")} s; ctr ${ctr.map((s) => s.toFixed(2)).join(", ")} s\n`,
    );
    return [
      {
        benchmark: `image pull + unpack, ${(bytes / MiB).toFixed(0)} MiB / ${LAYERS} gzip layers, local registry (best of ${ROUNDS}, fresh containerd each)`,
        ours: `${best(ours).toFixed(2)} s (${(bytes / MiB / best(ours)).toFixed(0)} MiB/s; median ${median(ours).toFixed(2)} s)`,
        baseline: `ctr images pull --plain-http: ${best(ctr).toFixed(2)} s (${(bytes / MiB / best(ctr)).toFixed(0)} MiB/s; median ${median(ctr).toFixed(2)} s)`,
        ratio: `${speed.toFixed(2)}× ctr's speed`,
        target: "≥ 0.8× ctr's speed",
        ok: speed >= 0.8,
      },
    ];
  } finally {
    await registry.stop();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { table } = await import("./stats.js");
  console.log(table(await benchPull()));
}
