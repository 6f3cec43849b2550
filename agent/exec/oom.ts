// The OOM score of every process the agent spawns.
//
// The host starts tini and the agent with a low oom_score_adj (the OCI spec's
// oomScoreAdj), so that under memory pressure the kernel kills a workspace's
// programs before the one process that serves it. Children inherit that value;
// the agent puts each one it spawns back to BRIDGE_CHILD_OOM_SCORE_ADJ (0 by
// default) right after the spawn. Raising the value needs no privilege.
// Grandchildren forked before the write (a shell starting a background job in
// its first microseconds) keep the inherited value.
import fs from "node:fs";
import type { AgentContext } from "../context.js";
import { logLine } from "../log.js";

export const DEFAULT_CHILD_OOM_SCORE_ADJ = 0;

/** BRIDGE_CHILD_OOM_SCORE_ADJ: an integer in -1000..1000; anything else is the default, with a note. */
export function parseOomScoreAdj(raw: string | undefined): { value: number; problem: string | undefined } {
  if (raw === undefined || raw === "") return { value: DEFAULT_CHILD_OOM_SCORE_ADJ, problem: undefined };
  if (/^-?[0-9]{1,4}$/.test(raw.trim())) {
    const value = Number(raw.trim());
    if (value >= -1000 && value <= 1000) return { value, problem: undefined };
  }
  return {
    value: DEFAULT_CHILD_OOM_SCORE_ADJ,
    problem: `BRIDGE_CHILD_OOM_SCORE_ADJ=${JSON.stringify(raw)} is not an integer in -1000..1000; using ${DEFAULT_CHILD_OOM_SCORE_ADJ}`,
  };
}

/**
 * Writes the configured oom_score_adj of a just-spawned process. A failure (no
 * /proc, a value below the agent's own without CAP_SYS_RESOURCE) is logged once
 * per agent and otherwise ignored: the process runs either way.
 */
export function setChildOomScore(ctx: AgentContext, pid: number): void {
  try {
    fs.writeFileSync(`/proc/${pid}/oom_score_adj`, String(ctx.childOomScoreAdj));
  } catch (err) {
    // ESRCH: the process already exited (a zombie has no memory to score).
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ESRCH") return;
    if (ctx.oomScoreWarned) return;
    ctx.oomScoreWarned = true;
    logLine(`cannot set oom_score_adj ${ctx.childOomScoreAdj} of spawned processes (first failure: pid ${pid}: ${(err as Error).message}); they keep the agent's`);
  }
}
