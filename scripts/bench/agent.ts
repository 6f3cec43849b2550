// Bridge agent benchmarks: the agent in a busybox container under a private
// containerd, called over its Unix socket, against baselines measured in the
// same run on the same container.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import { BridgeClient } from "../../host/bridge/client.js";
import { startContainerd } from "../../test/integration/env/containerd.js";
import { buildTestImages, importTestImages } from "../../test/integration/env/images.js";
import { requireRuntimeBundle, runContainer, waitForSocket } from "../../test/integration/env/container.js";
import { ms, timeCalls, type Row } from "./stats.js";

const MiB = 1024 * 1024;

/** Seconds to pipe `cat file` into a Node process that reads and discards it. */
function catIntoNode(file: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const sh = spawn("sh", ["-c", `cat "$0" | node -e "process.stdin.on('data',()=>{})"`, file], { stdio: "inherit" });
    sh.on("error", reject);
    sh.on("exit", (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e9) : reject(new Error(`cat pipe exited ${code}`))));
  });
}

async function agentPid(envCtr: (args: string[]) => Promise<{ stdout: string }>, id: string): Promise<number> {
  const ls = await envCtr(["tasks", "ls"]);
  const row = ls.stdout.split("\n").find((l) => l.startsWith(id + " ") || l.split(/\s+/)[0] === id);
  const pid = Number(row?.split(/\s+/)[1]);
  if (!pid) throw new Error(`no task pid for ${id}`);
  return pid;
}

const mib = (bytes: number) => `${(bytes / MiB).toFixed(1)} MiB`;

/** Resident set size of a process, and its proportional share (shared pages divided among their users). */
async function memoryOf(pid: number): Promise<{ rss: number; pss: number }> {
  const rollup = await fs.readFile(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(rollup)?.[1] ?? NaN) * 1024;
  return { rss: kb("Rss"), pss: kb("Pss") };
}

/** The agent's node process of a running container (the child of tini). */
async function agentNodePid(envCtr: (args: string[]) => Promise<{ stdout: string }>, id: string): Promise<number> {
  const initPid = await agentPid(envCtr, id);
  const children = (await fs.readFile(`/proc/${initPid}/task/${initPid}/children`, "utf8")).trim().split(/\s+/).map(Number);
  if (!children[0]) throw new Error(`no agent process under tini in ${id}`);
  return children[0];
}

/** Mean PSS of `n` idle `node -e setTimeout` processes running together. */
async function bareNodesPss(n: number): Promise<number> {
  const kids = Array.from({ length: n }, () => spawn(process.execPath, ["-e", "setTimeout(() => {}, 15000)"], { stdio: "ignore" }));
  try {
    await new Promise((r) => setTimeout(r, 2000));
    let sum = 0;
    for (const k of kids) sum += (await memoryOf(k.pid!)).pss;
    return sum / n;
  } finally {
    for (const k of kids) k.kill();
  }
}

/** The same number for an idle Node process running `script`, measured now. */
async function idleNodeMemory(script: string): Promise<{ rss: number; pss: number }> {
  const child = spawn(process.execPath, ["-e", `${script}; setTimeout(() => {}, 10000)`], { stdio: "ignore" });
  try {
    await new Promise((r) => setTimeout(r, 1500));
    return await memoryOf(child.pid!);
  } finally {
    child.kill();
  }
}

export async function benchAgent(): Promise<Row[]> {
  requireRuntimeBundle();
  const env = await startContainerd();
  const rows: Row[] = [];
  try {
    const refs = await importTestImages(env, await buildTestImages());
    const c = await runContainer(env, { id: `bench-${randomBytes(3).toString("hex")}`, image: refs.busybox });
    const client = new BridgeClient(`unix:${c.socketPath}`, { defaultTimeoutMs: 120_000 });
    try {
      await waitForSocket(c.socketPath, 15_000);
      await client.waitReady(5_000);
      const initPid = await agentPid((a) => env.ctr(a), c.id);

      // Idle RSS first, before the benchmark traffic grows the heap.
      await new Promise((r) => setTimeout(r, 1500));
      const children = (await fs.readFile(`/proc/${initPid}/task/${initPid}/children`, "utf8")).trim().split(/\s+/).map(Number);
      const nodePid = children[0]!;
      const agentMem = await memoryOf(nodePid);
      const bareMem = await idleNodeMemory("");
      // The floor for any agent on the prescribed stack: grpc-js loaded and a server listening.
      const grpcSock = `/tmp/memoh-bench-grpc-${randomBytes(4).toString("hex")}.sock`;
      const grpcMem = await idleNodeMemory(
        `const g = require("@grpc/grpc-js"); new g.Server().bindAsync("unix:${grpcSock}", ` +
          `g.ServerCredentials.createInsecure(), () => {})`,
      ).finally(() => fs.rm(grpcSock, { force: true }));

      // exec `true`: agent vs ctr task exec.
      const ours = await timeCalls(300, () => client.exec({ argv: ["true"] }));
      const ctr = await timeCalls(30, () => c.exec(["true"]), 3);
      rows.push({
        benchmark: "exec `true` round trip (p50 / p99)",
        ours: `${ms(ours.p50)} / ${ms(ours.p99)}`,
        baseline: `ctr task exec: ${ms(ctr.p50)} / ${ms(ctr.p99)}`,
        ratio: `${(ctr.p50 / ours.p50).toFixed(1)}× faster`,
        target: "≥ 10× faster (p50)",
        ok: ctr.p50 / ours.p50 >= 10,
      });

      // 4 KiB ReadFile.
      const text = ("x".repeat(63) + "\n").repeat(64);
      await client.writeFile("bench/4k.txt", text);
      // Long warm-up: the first thousand calls run while both JITs still optimise.
      const rf = await timeCalls(5000, () => client.readFile({ path: "bench/4k.txt" }), 2000);
      // The same read the way a tool without the agent would do it.
      const catRf = await timeCalls(30, async () => {
        const r = await c.exec(["cat", "/data/bench/4k.txt"]);
        if (r.stdout.length !== text.length) throw new Error(`ctr task exec cat returned ${r.stdout.length} bytes`);
      }, 3);
      rows.push({
        benchmark: "ReadFile 4 KiB (p50 / p99)",
        ours: `${ms(rf.p50)} / ${ms(rf.p99)}`,
        baseline: `ctr task exec cat: ${ms(catRf.p50)} / ${ms(catRf.p99)}`,
        ratio: `${(catRf.p50 / rf.p50).toFixed(0)}× faster`,
        target: "p50 ≤ 1 ms",
        ok: rf.p50 <= 1,
      });

      // 256 MiB ReadRaw vs cat | node.
      const size = 256 * MiB;
      const block = randomBytes(MiB);
      await client.writeRaw("bench/big.bin", (function* () {
        for (let i = 0; i < size / MiB; i++) yield block;
      })());
      const hostPath = `/proc/${initPid}/root/data/bench/big.bin`;
      await catIntoNode(hostPath); // warm the page cache for both
      let best = Infinity;
      for (let i = 0; i < 3; i++) {
        const t0 = process.hrtime.bigint();
        let n = 0;
        for await (const chunk of client.readRaw("bench/big.bin")) n += chunk.length;
        if (n !== size) throw new Error(`ReadRaw returned ${n} bytes`);
        best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
      }
      let bestCat = Infinity;
      for (let i = 0; i < 3; i++) bestCat = Math.min(bestCat, await catIntoNode(hostPath));
      const mbps = size / MiB / best;
      const catMbps = size / MiB / bestCat;
      rows.push({
        benchmark: "ReadRaw 256 MiB",
        ours: `${mbps.toFixed(0)} MiB/s`,
        baseline: `cat \\| node: ${catMbps.toFixed(0)} MiB/s`,
        ratio: `${((mbps / catMbps) * 100).toFixed(0)}%`,
        target: "≥ 50%",
        ok: mbps / catMbps >= 0.5,
      });

      rows.push({
        benchmark: "idle agent RSS",
        ours: mib(agentMem.rss),
        baseline: `idle \`node -e setTimeout\`: ${mib(bareMem.rss)}; idle grpc-js server, nothing else: ${mib(grpcMem.rss)}`,
        ratio: `+${mib(agentMem.rss - bareMem.rss)}`,
        target: "≤ 40 MB RSS",
        ok: agentMem.rss <= 40e6,
      });
    } finally {
      client.close();
      await c.stop();
    }
    // Last, so its containers cannot disturb the timings above.
    rows.push(await fleetMemory(env, refs.busybox, 5));
  } finally {
    await env.stop();
  }
  return rows;
}

/** Memory per workspace when `n` idle ones run together: the node binary's pages are shared. */
async function fleetMemory(env: Awaited<ReturnType<typeof startContainerd>>, image: string, n: number): Promise<Row> {
  const fleet = [];
  try {
    for (let i = 0; i < n; i++) fleet.push(await runContainer(env, { id: `bench-${randomBytes(3).toString("hex")}`, image }));
    for (const c of fleet) await waitForSocket(c.socketPath, 15_000);
    await new Promise((r) => setTimeout(r, 1500));
    let pssSum = 0;
    for (const c of fleet) pssSum += (await memoryOf(await agentNodePid((a) => env.ctr(a), c.id))).pss;
    const barePss = await bareNodesPss(n);
    return {
      benchmark: `idle agents, ${n} workspaces: memory each (PSS)`,
      ours: mib(pssSum / n),
      baseline: `${n} idle \`node -e setTimeout\`: ${mib(barePss)} each`,
      ratio: `+${mib(pssSum / n - barePss)}`,
      target: "— (informs)",
      ok: undefined,
    };
  } finally {
    for (const c of fleet) await c.stop().catch(() => undefined);
  }
}
