// A tool call as the orchestrator makes it: `exec true` and a 4 KiB ReadFile through
// WorkspaceManager.call (pool, workspace identity check, deletion guard) into a full
// workspace (seccomp profile, limits, CNI network), against `ctr task exec` in the
// same container.
import { randomBytes } from "node:crypto";
import { startWorkspaceFixture } from "../../test/integration/env/workspace.js";
import { ms, timeCalls, type Row } from "./stats.js";

export async function benchWorkspace(): Promise<Row[]> {
  const fx = await startWorkspaceFixture({ embeddedStore: true });
  const rows: Row[] = [];
  try {
    const mgr = fx.manager();
    const bot = `bench-${randomBytes(3).toString("hex")}`;
    const ws = await mgr.ensure(bot);
    await mgr.call(bot, (c) => c.writeFile("bench-4k.txt", "x".repeat(4095) + "\n"));
    const ctrExec = (argv: string[]) =>
      fx.env.ctr(["tasks", "exec", "--exec-id", `b-${randomBytes(4).toString("hex")}`, "--fifo-dir", fx.env.fifoDir, ws.containerId, ...argv], { check: true });

    const exec = await timeCalls(300, () => mgr.call(bot, (c) => c.exec({ argv: ["true"] })));
    const ctr = await timeCalls(30, () => ctrExec(["true"]), 3);
    rows.push({
      benchmark: "workspace tool call: exec `true` via the manager (sandbox, limits, pool; p50 / p99)",
      ours: `${ms(exec.p50)} / ${ms(exec.p99)}`,
      baseline: `ctr task exec: ${ms(ctr.p50)} / ${ms(ctr.p99)}`,
      ratio: `${(ctr.p50 / exec.p50).toFixed(1)}× faster`,
      target: "≥ 10× faster (p50)",
      ok: ctr.p50 / exec.p50 >= 10,
    });

    const read = await timeCalls(3000, () => mgr.call(bot, (c) => c.readFile({ path: "bench-4k.txt" })), 2000);
    const cat = await timeCalls(30, () => ctrExec(["cat", "/data/bench-4k.txt"]), 3);
    rows.push({
      benchmark: "workspace tool call: ReadFile 4 KiB via the manager (p50 / p99)",
      ours: `${ms(read.p50)} / ${ms(read.p99)}`,
      baseline: `ctr task exec cat: ${ms(cat.p50)} / ${ms(cat.p99)}`,
      ratio: `${Math.round(cat.p50 / read.p50)}× faster`,
      target: "p50 ≤ 1 ms",
      ok: read.p50 <= 1,
    });
    await mgr.delete(bot);
  } finally {
    await fx.close();
  }
  return rows;
}
