// A workspace's cgroup limits: memory, CPU and pids. Defaults come from the config
// (MEMOH_LIMIT_*); a create may override them; they are kept in the row, re-applied
// when the container is rebuilt, and changed on a running task without a restart.
import type { WorkspaceLimits } from "../store/types.js";
import { WorkspaceError } from "./errors.js";

export type { WorkspaceLimits };

const MIB = 1024 * 1024;

/** 2 GiB, 2 CPUs, 1024 processes: enough for package managers and compilers, bounded for the host. */
export const DEFAULT_LIMITS: WorkspaceLimits = { memoryBytes: 2048 * MIB, cpus: 2, pids: 1024 };

/** Lower bounds below which the agent itself cannot run. */
export const MIN_MEMORY_BYTES = 64 * MIB;
export const MIN_PIDS = 16;
export const MIN_CPUS = 0.05;
export const MAX_CPUS = 1024;
/** The kernel's pid_max ceiling. */
export const MAX_PIDS = 4_194_304;

/** A partial change (a request) on top of limits in force. */
export type LimitsChange = Partial<WorkspaceLimits>;

/** Checks a requested change; every field optional, each present one within bounds. */
export function validateLimitsChange(change: unknown): LimitsChange {
  if (typeof change !== "object" || change === null || Array.isArray(change)) {
    throw new WorkspaceError("invalid_argument", "limits must be an object with memoryBytes, cpus and/or pids");
  }
  const c = change as Record<string, unknown>;
  for (const key of Object.keys(c)) {
    if (!["memoryBytes", "cpus", "pids"].includes(key)) throw new WorkspaceError("invalid_argument", `limits: unknown field ${JSON.stringify(key)}`);
  }
  const out: LimitsChange = {};
  if (c.memoryBytes !== undefined) {
    if (typeof c.memoryBytes !== "number" || !Number.isSafeInteger(c.memoryBytes) || c.memoryBytes < MIN_MEMORY_BYTES) {
      throw new WorkspaceError("invalid_argument", `limits.memoryBytes must be an integer of at least ${MIN_MEMORY_BYTES} (64 MiB), got ${JSON.stringify(c.memoryBytes)}`);
    }
    out.memoryBytes = c.memoryBytes;
  }
  if (c.cpus !== undefined) {
    if (typeof c.cpus !== "number" || !Number.isFinite(c.cpus) || c.cpus < MIN_CPUS || c.cpus > MAX_CPUS) {
      throw new WorkspaceError("invalid_argument", `limits.cpus must be a number from ${MIN_CPUS} to ${MAX_CPUS}, got ${JSON.stringify(c.cpus)}`);
    }
    out.cpus = c.cpus;
  }
  if (c.pids !== undefined) {
    if (typeof c.pids !== "number" || !Number.isSafeInteger(c.pids) || c.pids < MIN_PIDS || c.pids > MAX_PIDS) {
      throw new WorkspaceError("invalid_argument", `limits.pids must be an integer from ${MIN_PIDS} to ${MAX_PIDS}, got ${JSON.stringify(c.pids)}`);
    }
    out.pids = c.pids;
  }
  return out;
}

export function applyLimitsChange(base: WorkspaceLimits, change: LimitsChange): WorkspaceLimits {
  return { memoryBytes: change.memoryBytes ?? base.memoryBytes, cpus: change.cpus ?? base.cpus, pids: change.pids ?? base.pids };
}

/** Which fields of `change` differ from `current` (for conflicts and events). */
export function limitsDifferences(current: WorkspaceLimits, change: LimitsChange): string[] {
  const out: string[] = [];
  for (const key of ["memoryBytes", "cpus", "pids"] as const) {
    if (change[key] !== undefined && change[key] !== current[key]) out.push(`${key} ${current[key]} (asked: ${change[key]})`);
  }
  return out;
}
