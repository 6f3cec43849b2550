// A task's cgroup counters read straight from the cgroup filesystem: OOM kills,
// memory usage and limit, pids current and limit. The spec puts a container in
// `linux.cgroupsPath` (`/<namespace>/<id>`); runc creates it under every
// controller (cgroup v1: /sys/fs/cgroup/<controller>/<path>) or once in the
// unified tree (cgroup v2: /sys/fs/cgroup/<path>).
//
// The OOM kill counter is what tells "the OOM killer took a process" apart from
// any other exit; containerd's /tasks/oom event says the same live, this
// counter says it afterwards, as long as the task (and so its cgroup) exists.
import fs from "node:fs";
import path from "node:path";
import { ContainerdError } from "./errors.js";

export type CgroupVersion = "v1" | "v2";

export const CGROUP_ROOT = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC = 0x63677270;
// A v1 "no limit" is PAGE_COUNTER_MAX pages in bytes, about 2^63; anything this large is no limit.
const UNLIMITED_FROM = 2n ** 62n;

export interface MemoryCounters {
  usageBytes: number;
  /** undefined: no limit. */
  limitBytes: number | undefined;
  /** Processes the OOM killer killed in this cgroup (and its children) since it was created. */
  oomKills: number;
}

export interface PidsCounters {
  /** Processes and threads now. */
  current: number;
  /** undefined: no limit. */
  limit: number | undefined;
}

export interface CgroupStats {
  version: CgroupVersion;
  /** undefined when the memory controller is not there for this cgroup. */
  memory: MemoryCounters | undefined;
  /** undefined when the pids controller is not there for this cgroup. */
  pids: PidsCounters | undefined;
}

// ------------------------------------------------------------------ parsing (pure)

/** "key value" lines (memory.oom_control, memory.events, memory.stat) as numbers. */
export function parseKeyedCounters(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = /^(\S+)\s+(\d+)\s*$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** A single number (memory.usage_in_bytes, pids.current). */
export function parseCounter(text: string, what = "counter"): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new Error(`${what}: expected a number, got ${JSON.stringify(t)}`);
  return Number(t);
}

/** A limit: "max" (v2) or a v1 value near 2^63 is no limit (undefined). */
export function parseLimit(text: string, what = "limit"): number | undefined {
  const t = text.trim();
  if (t === "max") return undefined;
  if (!/^\d+$/.test(t)) throw new Error(`${what}: expected a number or "max", got ${JSON.stringify(t)}`);
  return BigInt(t) >= UNLIMITED_FROM ? undefined : Number(t);
}

/** cgroup v1 memory: memory.usage_in_bytes, memory.limit_in_bytes, memory.oom_control (`oom_kill N`, kernel 4.13+). */
export function memoryCountersV1(files: { usage: string; limit: string; oomControl: string }): MemoryCounters {
  return {
    usageBytes: parseCounter(files.usage, "memory.usage_in_bytes"),
    limitBytes: parseLimit(files.limit, "memory.limit_in_bytes"),
    oomKills: parseKeyedCounters(files.oomControl).oom_kill ?? 0,
  };
}

/** cgroup v2 memory: memory.current, memory.max, memory.events (`oom_kill N`). */
export function memoryCountersV2(files: { current: string; max: string; events: string }): MemoryCounters {
  return {
    usageBytes: parseCounter(files.current, "memory.current"),
    limitBytes: parseLimit(files.max, "memory.max"),
    oomKills: parseKeyedCounters(files.events).oom_kill ?? 0,
  };
}

/** pids.current and pids.max (the same files on v1 and v2). */
export function pidsCounters(files: { current: string; max: string }): PidsCounters {
  return { current: parseCounter(files.current, "pids.current"), limit: parseLimit(files.max, "pids.max") };
}

// ------------------------------------------------------------------ the filesystem

/** cgroup v2 when the cgroup root is a cgroup2 mount (unified); v1 otherwise (also the hybrid layout). */
export function detectCgroupVersion(root = CGROUP_ROOT): CgroupVersion {
  try {
    if (fs.statfsSync(root).type === CGROUP2_SUPER_MAGIC) return "v2";
  } catch (err) {
    throw new Error(`cannot read the cgroup filesystem at ${root}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return fs.existsSync(path.join(root, "cgroup.controllers")) ? "v2" : "v1";
}

/** Checks a spec's cgroupsPath: absolute, no `..`; the systemd form (`slice:prefix:name`) is not supported. */
function checkCgroupsPath(cgroupsPath: string): string {
  if (!cgroupsPath.startsWith("/") || cgroupsPath.split("/").some((seg) => seg === ".." || seg === ".") || cgroupsPath.includes("\0")) {
    throw new ContainerdError("invalid_argument", `cgroupsPath ${JSON.stringify(cgroupsPath)}: expected an absolute path like /<namespace>/<id> (the systemd form is not supported)`);
  }
  return cgroupsPath;
}

export interface CgroupOptions {
  /** Default /sys/fs/cgroup. */
  root?: string;
  /** Default: detected from the root. */
  version?: CgroupVersion;
}

/** The directory of `cgroupsPath` for `controller` (cgroup v1) or in the unified tree (v2, controller ignored). */
export function cgroupDir(cgroupsPath: string, controller: string, opts: CgroupOptions = {}): string {
  const root = opts.root ?? CGROUP_ROOT;
  const version = opts.version ?? detectCgroupVersion(root);
  const rel = checkCgroupsPath(cgroupsPath).slice(1);
  return version === "v2" ? path.join(root, rel) : path.join(root, controller, rel);
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function readAll<K extends string>(dir: string, files: Record<K, string>): Promise<Record<K, string> | undefined> {
  const out = {} as Record<K, string>;
  for (const [key, name] of Object.entries(files) as Array<[K, string]>) {
    const text = await readIfExists(path.join(dir, name));
    if (text === undefined) return undefined;
    out[key] = text;
  }
  return out;
}

/**
 * Memory and pids counters of the cgroup at `cgroupsPath`. Fails with code
 * "not_found" when the cgroup does not exist (no task, or it was deleted).
 */
export async function readCgroupStats(cgroupsPath: string, opts: CgroupOptions = {}): Promise<CgroupStats> {
  const root = opts.root ?? CGROUP_ROOT;
  const version = opts.version ?? detectCgroupVersion(root);
  const dirOf = (controller: string) => cgroupDir(cgroupsPath, controller, { root, version });
  const dirs = version === "v2" ? [dirOf("")] : [dirOf("memory"), dirOf("pids")];
  if (!dirs.some((d) => fs.existsSync(d))) {
    throw new ContainerdError("not_found", `cgroup ${cgroupsPath} does not exist under ${root} (cgroup ${version}): is the task running?`);
  }
  let memory: MemoryCounters | undefined;
  if (version === "v1") {
    const files = await readAll(dirOf("memory"), { usage: "memory.usage_in_bytes", limit: "memory.limit_in_bytes", oomControl: "memory.oom_control" });
    memory = files && memoryCountersV1(files);
  } else {
    const files = await readAll(dirOf(""), { current: "memory.current", max: "memory.max", events: "memory.events" });
    memory = files && memoryCountersV2(files);
  }
  const pidsFiles = await readAll(dirOf("pids"), { current: "pids.current", max: "pids.max" });
  return { version, memory, pids: pidsFiles && pidsCounters(pidsFiles) };
}

/**
 * Whether runc can pin memory+swap to the memory limit (ResourceLimitOptions.limitSwap):
 * cgroup v1 needs swap accounting (memory.memsw.*), v2 memory.swap.max.
 */
export function swapLimitSupported(opts: CgroupOptions = {}): boolean {
  const root = opts.root ?? CGROUP_ROOT;
  const version = opts.version ?? detectCgroupVersion(root);
  if (version === "v1") return fs.existsSync(path.join(root, "memory", "memory.memsw.limit_in_bytes"));
  // The root cgroup has no limit files; any child with the memory controller tells.
  for (const entry of fs.readdirSync(root, { withFileTypes: true })) {
    if (entry.isDirectory() && fs.existsSync(path.join(root, entry.name, "memory.max"))) return fs.existsSync(path.join(root, entry.name, "memory.swap.max"));
  }
  return false;
}
