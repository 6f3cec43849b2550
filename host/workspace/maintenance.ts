// Housekeeping that keeps a long-running host bounded: task logs under the data root
// are size-capped and rotated, and lifecycle events are pruned to the newest N per
// workspace. Run by the manager process at startup and then periodically; neither
// step touches a workspace's state, so neither takes a bot's lock.
import type { WorkspaceContext } from "./context.js";
import { describeError } from "./errors.js";
import { logDir } from "./paths.js";
import { rotateTaskLogs } from "./task-logs.js";

export interface MaintenanceOptions {
  /** Rotate a task log once it is larger than this (default 10 MiB). */
  taskLogMaxBytes?: number;
  /** Rotated copies kept per log (default 2). */
  taskLogKeep?: number;
  /** Lifecycle events kept per workspace (default 1000). */
  eventsKeep?: number;
}

export interface MaintenanceReport {
  logsRotated: string[];
  eventsPruned: number;
  errors: string[];
}

export async function runMaintenance(ctx: WorkspaceContext, opts: MaintenanceOptions = {}): Promise<MaintenanceReport> {
  const report: MaintenanceReport = { logsRotated: [], eventsPruned: 0, errors: [] };
  const dir = logDir(ctx.options.dataRoot);
  {
    try {
      const rotation = await rotateTaskLogs(dir, { maxBytes: opts.taskLogMaxBytes ?? 10 * 1024 * 1024, keep: opts.taskLogKeep ?? 2 });
      report.logsRotated = rotation.rotated;
      for (const f of rotation.failed) report.errors.push(`${f.file}: ${f.error.message}`);
    } catch (err) {
      report.errors.push(`task logs: ${describeError(err)}`);
    }
  }
  try {
    report.eventsPruned = await ctx.store.pruneEvents(opts.eventsKeep ?? 1000);
  } catch (err) {
    report.errors.push(`lifecycle events: ${describeError(err)}`);
  }
  return report;
}
