// Workspace data: export of a 5,000-file, 200 MiB /data (through the agent, the workspace
// running) against GNU `tar -czf` of the same tree on the host (its overlay upper dir),
// import of that archive (received, checked, swapped, the workspace restarted) against
// `tar -xzf` into an empty directory, and version create and rollback (stop, commit,
// prepare, start).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { startWorkspaceFixture } from "../../test/integration/env/workspace.js";
import type { Row } from "./stats.js";

const run = promisify(execFile);

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const s = (x: number) => `${x.toFixed(2)} s`;

export async function benchData(): Promise<Row[]> {
  const fx = await startWorkspaceFixture({ embeddedStore: true });
  const rows: Row[] = [];
  try {
    const mgr = fx.manager();
    const bot = `bench-data-${randomBytes(3).toString("hex")}`;
    const ws = await mgr.ensure(bot);
    // 5,000 files of 40 KiB (half random, half text) in 50 directories: 200 MiB, written through the agent.
    const text = Buffer.from("the quick brown fox jumps over the lazy dog 0123456789\n".repeat(800).slice(0, 40_960));
    await mgr.call(bot, async (c) => {
      for (let d = 1; d <= 50; d++) await c.mkdir(`tree/d${d}`, true);
      for (let i = 0; i < 5000; i++) await c.writeFile(`tree/d${(i % 50) + 1}/f${i}`, i % 2 === 0 ? randomBytes(40_960) : text);
    });
    const files = 5000;
    // The same tree on the host: the overlay's upper dir of the running workspace.
    const mounts = await fx.cd.snapshots.mounts(ws.containerId);
    const upper = mounts[0]!.options.find((o) => o.startsWith("upperdir="))!.slice("upperdir=".length);
    const work = fs.mkdtempSync(path.join(fx.dataRoot, "bench-data-"));
    const ours = path.join(work, "ours.tar.gz");
    const theirs = path.join(work, "tar.tar.gz");

    const exportOurs = await seconds(() => mgr.exportData(bot, fs.createWriteStream(ours)));
    await run("sync");
    const exportTar = await seconds(() => run("tar", ["-czf", theirs, "-C", path.join(upper, "data"), "."]));
    rows.push({
      benchmark: `data export, ${files} files / 200 MiB, workspace running (through the agent)`,
      ours: `${s(exportOurs)} (${(fs.statSync(ours).size / 2 ** 20).toFixed(0)} MiB)`,
      baseline: `tar -czf on the host: ${s(exportTar)} (${(fs.statSync(theirs).size / 2 ** 20).toFixed(0)} MiB)`,
      ratio: `${(exportOurs / exportTar).toFixed(2)}×`,
      target: "≤ 1.25× tar's time",
      ok: exportOurs / exportTar <= 1.25,
    });

    const importOurs = await seconds(() => mgr.importData(bot, fs.createReadStream(ours)));
    const into = path.join(work, "untar");
    fs.mkdirSync(into);
    const importTar = await seconds(() => run("tar", ["-xzf", ours, "-C", into]));
    rows.push({
      benchmark: "data import of that archive (received, checked, swapped, workspace restarted)",
      ours: s(importOurs),
      baseline: `tar -xzf into an empty dir: ${s(importTar)}`,
      ratio: `${(importOurs / importTar).toFixed(2)}×`,
      target: "— (informs)",
      ok: undefined,
    });

    const creates: number[] = [];
    const rollbacks: number[] = [];
    for (let i = 0; i < 3; i++) {
      creates.push(await seconds(() => mgr.createVersion(bot, { displayName: `bench ${i}` })));
      await mgr.call(bot, (c) => c.writeFile(`change-${i}.txt`, `${i}\n`));
    }
    for (let i = 0; i < 3; i++) rollbacks.push(await seconds(() => mgr.rollback(bot, 1)));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    rows.push({
      benchmark: "version create (stop, commit, prepare, start; 200 MiB /data; mean of 3)",
      ours: s(mean(creates)),
      baseline: "—",
      ratio: "—",
      target: "— (informs)",
      ok: undefined,
    });
    rows.push({
      benchmark: "rollback (save the current state as a version, prepare on the old one, start; mean of 3)",
      ours: s(mean(rollbacks)),
      baseline: "—",
      ratio: "—",
      target: "— (informs)",
      ok: undefined,
    });
    await mgr.delete(bot);
    fs.rmSync(work, { recursive: true, force: true });
  } finally {
    await fx.close();
  }
  return rows;
}
