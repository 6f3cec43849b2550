// Micro-benchmark (not part of `npm run bench`; `npx tsx scripts/bench/tree-micro.ts [dir]` after
// building the runtime bundle): ReadTree of a 5,000-file / 200 MiB tree from a
// bundled agent process on the host, consumed only or archived, against tar -czf of the same tree.
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";
import { ArchiveWriter } from "../../host/data/archive.js";
import { packReadTree } from "../../host/data/archive-tree.js";

const root = process.argv[2] ?? path.join(os.tmpdir(), "memoh-tree-micro");
const data = path.join(root, "data");
if (!fs.existsSync(path.join(data, "tree"))) {
  const text = Buffer.from("the quick brown fox jumps over the lazy dog 0123456789\n".repeat(800).slice(0, 40_960));
  for (let d = 1; d <= 50; d++) fs.mkdirSync(path.join(data, `tree/d${d}`), { recursive: true });
  for (let i = 0; i < 5000; i++) fs.writeFileSync(path.join(data, `tree/d${(i % 50) + 1}/f${i}`), i % 2 === 0 ? randomBytes(40_960) : text);
}
const sock = path.join(root, "bridge.sock");
fs.rmSync(sock, { force: true });
const agent = spawn(process.execPath, [path.resolve("runtime-bundle/out/agent.js")], { env: { PATH: process.env.PATH!, BRIDGE_SOCKET_PATH: sock, BRIDGE_DATA_DIR: data }, stdio: "inherit" });
for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
const c = new BridgeClient(`unix:${sock}`);
await c.waitReady(10_000);
const cpuOf = (pid: number) => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
};
async function timed(label: string, fn: () => Promise<unknown>) {
  const a0 = cpuOf(agent.pid!);
  const h0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000;
  const h = process.cpuUsage(h0);
  console.log(`${label}: ${wall.toFixed(2)} s wall; agent cpu ${(cpuOf(agent.pid!) - a0).toFixed(2)} s; host cpu ${((h.user + h.system) / 1e6).toFixed(2)} s`);
}
const level = Number(process.env.LEVEL ?? 6);
for (let round = 0; round < 2; round++) {
  await timed("tar -czf", async () => execFileSync("tar", ["-czf", path.join(root, "t.tgz"), "-C", data, "."]));
  await timed("readTree only", async () => {
    let n = 0;
    for await (const ev of c.readTree("/" + path.relative("/", data))) if (ev.kind === "data") n += ev.data.byteLength;
  });
  await timed(`packReadTree level ${level}`, async () => {
    const w = new ArchiveWriter(fs.createWriteStream(path.join(root, "o.tgz")), { level });
    await packReadTree(c, w, { dir: data });
    await w.finish();
  });
}
c.close();
agent.kill();
