// Finishing a data operation that was cut short (the orchestrator died): run under the
// bot's lock before anything starts the workspace again (reconcile, ensure, start, the
// supervisor's restarts, a call's revive, every data operation). The journal says what
// was under way:
//   export, preserve, orphan_backup: only the host mount is left to remove;
//   import, restore: the swap of /data is finished or undone (import.ts repairSwap);
//   version, rollback: the commit is completed or never happened (versions.ts).
// A backup's temporary file of the bot is removed whether or not a journal is left: it is
// only ever written under the bot's lock, so one seen here belongs to nobody.
import fs from "node:fs";
import path from "node:path";
import type { WorkspaceContext } from "../workspace/context.js";
import { describeError } from "../workspace/errors.js";
import { repairSwap } from "./import.js";
import { finishVersionOp } from "./versions.js";
import { backupsDir, journalPath, mountPath, mountRootfs, readJournal, releaseMount, removeJournal, rootfsOf } from "./workspace-fs.js";

/** Returns what was repaired, or undefined when no data operation of the bot was cut short. */
export async function repairDataOp(ctx: WorkspaceContext, botId: string): Promise<string | undefined> {
  removeBackupTemps(ctx, botId);
  if (!fs.existsSync(journalPath(ctx, botId))) {
    await releaseMount(mountPath(ctx, botId));
    return undefined;
  }
  const j = readJournal(ctx, botId);
  if (j === undefined) return undefined;
  await releaseMount(mountPath(ctx, botId));
  let outcome = "cleaned";
  if ((j.op === "import" || j.op === "restore") && j.containerId !== "" && (await ctx.containerExists(j.containerId))) {
    // The task was paused for the operation and never started again: clear what is left of it.
    await ctx.cd.tasks.stop(j.containerId, 0);
    const { key, snapshotter } = await rootfsOf(ctx, j.containerId);
    const m = await mountRootfs(ctx, botId, key, snapshotter, true);
    try {
      outcome = await repairSwap(m.root);
    } finally {
      await m.release();
    }
  } else if (j.op === "version" || j.op === "rollback") {
    // Only a missing active rootfs needs the task gone (a task still running would write
    // into the committed version); rows missing after a commit are recorded under a
    // running task, which the operation started again when only the rows had failed.
    outcome = await finishVersionOp(ctx, j, { beforePrepare: () => ctx.cd.tasks.stop(j.containerId, 0) });
  }
  removeJournal(ctx, botId);
  ctx.log(`${botId}: a ${j.op} cut short was repaired (${outcome})`);
  if (j.containerId !== "") {
    await ctx.store.recordEvent(j.containerId, "data_op_repaired", { botId, op: j.op, outcome }).catch((e: unknown) => ctx.log(`${botId}: ${describeError(e)}`));
  }
  return `${j.op}: ${outcome}`;
}

/** A backup being written when the process died: its temporary file goes (a finished backup stays). */
function removeBackupTemps(ctx: WorkspaceContext, botId: string): void {
  const dir = backupsDir(ctx);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return; // no backups dir yet
  }
  for (const name of names) {
    if (!name.startsWith(`.${botId}.tar.gz.tmp-`)) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    ctx.log(`${botId}: removed ${name}, the temporary file of a backup cut short`);
  }
}
