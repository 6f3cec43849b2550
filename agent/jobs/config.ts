// Limits of the background jobs, from the agent's environment (BRIDGE_JOB_*).
import { MiB } from "../limits.js";

export interface JobsConfig {
  /** Where each job's output rings live (one dir per job). Not under /data: it is the agent's own state. */
  dir: string;
  /** A job running longer is killed with its process group (a StartJob may ask for less). */
  maxRuntimeMs: number;
  /** An ended job is kept (listed, its output readable) this long. */
  retentionMs: number;
  /** Bytes kept of each of a job's stdout and stderr. */
  ringBytes: number;
  /** Jobs running at once; one more is RESOURCE_EXHAUSTED. */
  maxRunning: number;
  /** Ended jobs kept at most; the oldest are forgotten first. */
  maxEnded: number;
}

export const DEFAULT_JOBS_CONFIG: Readonly<JobsConfig> = {
  dir: "/var/lib/memoh/jobs",
  maxRuntimeMs: 30 * 60_000,
  retentionMs: 60 * 60_000,
  ringBytes: 1 * MiB,
  maxRunning: 32,
  maxEnded: 100,
};

/** setTimeout's limit (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function positiveInt(raw: string | undefined, name: string, fallback: number, max: number, problems: string[]): number {
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0 || n > max) {
    problems.push(`${name}=${JSON.stringify(raw)} is not an integer from 1 to ${max}; using ${fallback}`);
    return fallback;
  }
  return n;
}

/** The jobs' limits from BRIDGE_JOB_* variables; a bad value is reported and its default used. */
export function jobsConfigFromEnv(env: NodeJS.ProcessEnv): { config: JobsConfig; problems: string[] } {
  const problems: string[] = [];
  const d = DEFAULT_JOBS_CONFIG;
  let dir = env.BRIDGE_JOB_DIR || d.dir;
  if (!dir.startsWith("/") || dir.includes("\0")) {
    problems.push(`BRIDGE_JOB_DIR=${JSON.stringify(dir)} is not an absolute path; using ${d.dir}`);
    dir = d.dir;
  }
  return {
    config: {
      dir,
      maxRuntimeMs: positiveInt(env.BRIDGE_JOB_MAX_RUNTIME_MS, "BRIDGE_JOB_MAX_RUNTIME_MS", d.maxRuntimeMs, 0xffffffff, problems),
      retentionMs: positiveInt(env.BRIDGE_JOB_RETENTION_MS, "BRIDGE_JOB_RETENTION_MS", d.retentionMs, MAX_TIMER_MS, problems),
      ringBytes: positiveInt(env.BRIDGE_JOB_RING_BYTES, "BRIDGE_JOB_RING_BYTES", d.ringBytes, 64 * MiB, problems),
      maxRunning: positiveInt(env.BRIDGE_JOB_MAX_RUNNING, "BRIDGE_JOB_MAX_RUNNING", d.maxRunning, 10_000, problems),
      maxEnded: positiveInt(env.BRIDGE_JOB_MAX_ENDED, "BRIDGE_JOB_MAX_ENDED", d.maxEnded, 10_000, problems),
    },
    problems,
  };
}
