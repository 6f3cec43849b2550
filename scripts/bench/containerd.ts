// Container create+start through our containerd client against `ctr run -d` of the
// same image and the same workspace shape (runtime bundle ro, socket dir, log file),
// in the same run, on the same private containerd. Timed through task start; the
// agent's socket is not waited for. Iterations alternate between the two, and every
// container is removed (untimed) before the next one.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { ContainerdClient } from "../../host/containerd/client.js";
import { bindMount, withEnv, withMounts, withProcessArgs } from "../../host/containerd/spec.js";
import { startContainerd, type ContainerdEnv } from "../../test/integration/env/containerd.js";
import { buildTestImages, importTestImages } from "../../test/integration/env/images.js";
import { DEFAULT_AGENT_ARGS, DEFAULT_RUNTIME_DIR, requireRuntimeBundle } from "../../test/integration/env/container.js";
import { ms, percentile, table, type Row } from "./stats.js";

const TARGET_RATIO = 1.2;

function stats(samples: number[]): { mean: number; p50: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { mean: samples.reduce((a, b) => a + b, 0) / samples.length, p50: percentile(sorted, 50) };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export async function benchCreateStart(iterations = 10, warmup = 2): Promise<Row[]> {
  requireRuntimeBundle();
  const env: ContainerdEnv = await startContainerd();
  const client = new ContainerdClient({ address: env.address, namespace: env.namespace, runcOptions: { root: env.runcRoot } });
  try {
    const image = (await importTestImages(env, await buildTestImages())).busybox;
    const dirs = (id: string) => {
      const socketDir = path.join(env.dir, "sockets", id);
      fs.mkdirSync(socketDir, { recursive: true });
      return { socketDir, logPath: path.join(env.dir, "logs", `${id}.log`) };
    };

    const ours = async (id: string) => {
      const { socketDir, logPath } = dirs(id);
      return timed(async () => {
        await client.createContainerFromImage({
          id,
          image,
          specOpts: [
            withProcessArgs(...DEFAULT_AGENT_ARGS),
            withEnv({ BRIDGE_SOCKET_PATH: "/run/memoh/bridge.sock" }),
            withMounts([bindMount(DEFAULT_RUNTIME_DIR, "/opt/memoh", ["rbind", "ro"]), bindMount(socketDir, "/run/memoh", ["rbind", "rw"])]),
          ],
        });
        await client.startContainer(id, { logPath });
      });
    };
    const ctr = async (id: string) => {
      const { socketDir, logPath } = dirs(id);
      const args = ["run", "--detach", "--runc-root", env.runcRoot, "--log-uri", `file://${logPath}`];
      args.push("--mount", `type=bind,src=${DEFAULT_RUNTIME_DIR},dst=/opt/memoh,options=rbind:ro`);
      args.push("--mount", `type=bind,src=${socketDir},dst=/run/memoh,options=rbind:rw`);
      args.push("--env", "BRIDGE_SOCKET_PATH=/run/memoh/bridge.sock", image, id, ...DEFAULT_AGENT_ARGS);
      return timed(() => env.ctr(args));
    };

    const samples = { ours: [] as number[], ctr: [] as number[] };
    for (let i = 0; i < warmup + iterations; i++) {
      for (const kind of ["ours", "ctr"] as const) {
        const id = `bench-${kind}-${i}-${randomBytes(2).toString("hex")}`;
        const t = kind === "ours" ? await ours(id) : await ctr(id);
        if (i >= warmup) samples[kind].push(t);
        await client.removeContainer(id, { graceMs: 2000 });
      }
    }
    const a = stats(samples.ours);
    const b = stats(samples.ctr);
    const ratio = a.mean / b.mean;
    return [
      {
        benchmark: `container create+start (busybox + runtime bundle, mean of ${iterations}; p50 ${ms(a.p50)} vs ${ms(b.p50)})`,
        ours: ms(a.mean),
        baseline: `ctr run -d: ${ms(b.mean)}`,
        ratio: `${ratio.toFixed(2)}×`,
        target: `≤ ${TARGET_RATIO}×`,
        ok: ratio <= TARGET_RATIO,
      },
    ];
  } finally {
    client.close();
    await env.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(table(await benchCreateStart()));
}
