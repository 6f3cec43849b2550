// The OCI runtime spec (the subset we write), and small options that each change
// one thing, composed with buildSpec — containerd's oci/spec_opts.go in TypeScript.
//
//   const spec = buildSpec(defaultUnixSpec(ns, id), withImageConfig(cfg), withMounts([...]), withMemoryLimit(512 << 20));
//
// The spec's types are in spec-types.ts, the user lookup in spec-user.ts. What stays
// here is one short option per field, kept together as containerd keeps spec_opts.go:
// the file is the list of what the host can set in a spec.

import { parseUser, type PasswdFiles } from "./spec-user.js";
import type { Spec, Mount, NamespaceType, LinuxDevice, LinuxResources, LinuxSeccomp } from "./spec-types.js";

export type * from "./spec-types.js";
export { parseUser, type PasswdFiles } from "./spec-user.js";

/** One change to a spec. */
export type SpecOpt = (spec: Spec) => void;

/** Applies `opts` in order to a deep copy of `base`. */
export function buildSpec(base: Spec, ...opts: SpecOpt[]): Spec {
  const spec = structuredClone(base);
  for (const opt of opts) opt(spec);
  return spec;
}

// ------------------------------------------------------------------ default

export const DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** containerd's defaultUnixCaps (oci/spec.go). */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_MKNOD",
  "CAP_NET_RAW",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** containerd's default maskedPaths (oci/spec.go); powercap's RAPL energy counters are a power side channel. */
export const DEFAULT_MASKED_PATHS = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
  "/proc/scsi",
];

export const DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** containerd's populateDefaultUnixSpec: what `ctr oci spec` prints, for container `id` in namespace `namespace`. */
export function defaultUnixSpec(namespace: string, id: string): Spec {
  return {
    ociVersion: "1.0.2-dev",
    root: { path: "rootfs" },
    process: {
      user: { uid: 0, gid: 0 },
      args: [],
      env: [DEFAULT_PATH_ENV],
      cwd: "/",
      capabilities: {
        bounding: [...DEFAULT_CAPABILITIES],
        effective: [...DEFAULT_CAPABILITIES],
        permitted: [...DEFAULT_CAPABILITIES],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    ],
    linux: {
      maskedPaths: [...DEFAULT_MASKED_PATHS],
      readonlyPaths: [...DEFAULT_READONLY_PATHS],
      cgroupsPath: `/${namespace}/${id}`,
      // Deny all; runc itself allows the standard nodes (null, zero, full, random, urandom, tty, ptmx).
      resources: { devices: [{ allow: false, access: "rwm" }] },
      namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }],
    },
  };
}

// ------------------------------------------------------------------ process

export function withProcessArgs(...args: string[]): SpecOpt {
  return (spec) => {
    spec.process.args = [...args];
  };
}

export function withProcessCwd(cwd: string): SpecOpt {
  return (spec) => {
    spec.process.cwd = cwd;
  };
}

/** "K=V" entries or an object; a key already set is replaced in place, new keys are appended. */
export function mergeEnv(base: string[], extra: string[] | Record<string, string>): string[] {
  const entries = Array.isArray(extra) ? extra : Object.entries(extra).map(([k, v]) => `${k}=${v}`);
  const out = [...base];
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    const key = eq < 0 ? entry : entry.slice(0, eq);
    const i = out.findIndex((e) => e === key || e.startsWith(`${key}=`));
    if (i >= 0) out[i] = entry;
    else out.push(entry);
  }
  return out;
}

/** Sets environment variables, merged by key into what the spec has. */
export function withEnv(env: string[] | Record<string, string>): SpecOpt {
  return (spec) => {
    spec.process.env = mergeEnv(spec.process.env, env);
  };
}

export function withTZ(tz: string): SpecOpt {
  return withEnv({ TZ: tz });
}

export function withUser(user: string, files?: PasswdFiles): SpecOpt {
  return (spec) => {
    const { uid, gid } = parseUser(user, files);
    spec.process.user = { uid, gid };
  };
}

/** The part of an image's config (`config` of the OCI image config JSON) a spec uses. */
export interface ImageConfig {
  Env?: string[] | null;
  Cmd?: string[] | null;
  Entrypoint?: string[] | null;
  WorkingDir?: string;
  User?: string;
}

/**
 * The image's environment, command (Entrypoint + Cmd), working dir and user, as
 * containerd's WithImageConfig. Later options (withProcessArgs, withEnv) override.
 */
export function withImageConfig(config: ImageConfig, files?: PasswdFiles): SpecOpt {
  return (spec) => {
    spec.process.env = mergeEnv(spec.process.env, config.Env ?? []);
    const args = [...(config.Entrypoint ?? []), ...(config.Cmd ?? [])];
    if (args.length > 0) spec.process.args = args;
    spec.process.cwd = config.WorkingDir || "/";
    if (config.User) withUser(config.User, files)(spec);
  };
}

/** Every capability Linux knows (as of 5.9), in its OCI spelling. */
export const ALL_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
] as const;

const KNOWN_CAPABILITIES = new Set<string>(ALL_CAPABILITIES);

/** "NET_RAW" or "CAP_NET_RAW" → "CAP_NET_RAW"; anything Linux does not know is an error. */
export function capabilityName(cap: string): string {
  const name = cap.startsWith("CAP_") ? cap : `CAP_${cap}`;
  if (!KNOWN_CAPABILITIES.has(name)) throw new Error(`unknown capability ${JSON.stringify(cap)} (expected e.g. CAP_NET_RAW)`);
  return name;
}

/**
 * The process gets exactly `caps` (bounding, effective and permitted sets);
 * inheritable and ambient keep only what is still granted.
 */
export function withCapabilities(caps: readonly string[]): SpecOpt {
  const names = [...new Set(caps.map(capabilityName))];
  return (spec) => {
    const granted = new Set(names);
    const old = spec.process.capabilities;
    spec.process.capabilities = {
      bounding: [...names],
      effective: [...names],
      permitted: [...names],
      ...(old.inheritable ? { inheritable: old.inheritable.filter((c) => granted.has(c)) } : {}),
      ...(old.ambient ? { ambient: old.ambient.filter((c) => granted.has(c)) } : {}),
    };
  };
}

/** Removes `caps` from every capability set; the rest stays. */
export function withoutCapabilities(...caps: string[]): SpecOpt {
  const drop = new Set(caps.map(capabilityName));
  return (spec) => {
    const c = spec.process.capabilities;
    const keep = (list: string[]) => list.filter((name) => !drop.has(name));
    spec.process.capabilities = {
      bounding: keep(c.bounding),
      effective: keep(c.effective),
      permitted: keep(c.permitted),
      ...(c.inheritable ? { inheritable: keep(c.inheritable) } : {}),
      ...(c.ambient ? { ambient: keep(c.ambient) } : {}),
    };
  };
}

/**
 * The OOM killer's preference for this container's processes, -1000 (never)
 * to 1000 (first). Children inherit it; a process may raise its own. runc writes
 * it with CAP_SYS_RESOURCE, so the kernel also makes it the container's floor:
 * every process in it may lower itself back to this value without a capability.
 */
export function withOomScoreAdj(adj: number): SpecOpt {
  if (!Number.isInteger(adj) || adj < -1000 || adj > 1000) throw new Error(`withOomScoreAdj: expected an integer from -1000 to 1000, got ${adj}`);
  return (spec) => {
    spec.process.oomScoreAdj = adj;
  };
}

export function withRlimit(type: string, soft: number, hard = soft): SpecOpt {
  return (spec) => {
    spec.process.rlimits = [...spec.process.rlimits.filter((r) => r.type !== type), { type, soft, hard }];
  };
}

// ------------------------------------------------------------------ mounts

/** A bind mount of a host path; options e.g. ["rbind", "ro"]. */
export function bindMount(source: string, destination: string, options: string[] = ["rbind", "rw"]): Mount {
  return { destination, type: "bind", source, options };
}

/** Adds mounts; one with the destination of an existing mount replaces it. */
export function withMounts(mounts: Mount[]): SpecOpt {
  return (spec) => {
    const dests = new Set(mounts.map((m) => m.destination));
    spec.mounts = [...spec.mounts.filter((m) => !dests.has(m.destination)), ...mounts.map((m) => ({ ...m, options: [...(m.options ?? [])] }))];
  };
}

// ------------------------------------------------------------------ identity, namespaces

export function withHostname(hostname: string): SpecOpt {
  return (spec) => {
    spec.hostname = hostname;
  };
}

function setNamespace(spec: Spec, type: NamespaceType, path: string | undefined): void {
  spec.linux.namespaces = [...spec.linux.namespaces.filter((n) => n.type !== type), path === undefined ? { type } : { type, path }];
}

/** Joins the network namespace at `path` (e.g. one CNI set up); without a path, a new one. */
export function withNetNS(path?: string): SpecOpt {
  return (spec) => setNamespace(spec, "network", path);
}

/** Shares the host's network namespace. */
export function withHostNetwork(): SpecOpt {
  return (spec) => {
    spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== "network");
  };
}

// ------------------------------------------------------------------ resources

export function withMemoryLimit(bytes: number): SpecOpt {
  return (spec) => {
    spec.linux.resources.memory = { ...spec.linux.resources.memory, limit: bytes };
  };
}

export const DEFAULT_CPU_PERIOD = 100_000;

/** A CPU limit: `cpus` CPUs' worth of time (quota/period), or explicit quota/period, or cgroup shares. */
export function withCpuLimit(limit: { cpus: number; period?: number } | { quota: number; period: number } | { shares: number }): SpecOpt {
  return (spec) => {
    const cpu = { ...spec.linux.resources.cpu };
    if ("shares" in limit) cpu.shares = limit.shares;
    else if ("cpus" in limit) {
      if (!(limit.cpus > 0)) throw new Error(`withCpuLimit: cpus must be > 0, got ${limit.cpus}`);
      cpu.period = limit.period ?? DEFAULT_CPU_PERIOD;
      cpu.quota = Math.round(limit.cpus * cpu.period);
    } else {
      cpu.quota = limit.quota;
      cpu.period = limit.period;
    }
    spec.linux.resources.cpu = cpu;
  };
}

export function withPidsLimit(limit: number): SpecOpt {
  return (spec) => {
    spec.linux.resources.pids = { limit };
  };
}

/** The limits a workspace gets; each is optional and left as it is when unset. */
export interface ResourceLimits {
  /** Memory (RSS and page cache) in bytes; swap cannot extend it. */
  memoryBytes?: number;
  /** CPUs' worth of time per period (1.5 = one and a half CPUs), at least 0.01. */
  cpus?: number;
  /** Most processes and threads at a time. */
  pids?: number;
}

export interface ResourceLimitOptions {
  /**
   * Also set memory+swap (`memory.swap`) to the memory limit, so swap does not
   * extend it (default true). runc fails when the kernel has no swap accounting
   * (cgroup v1 without memory.memsw.*): pass cgroups.ts's swapLimitSupported().
   */
  limitSwap?: boolean;
}

const RESOURCE_LIMIT_KEYS = new Set(["memoryBytes", "cpus", "pids"]);

function checkResourceLimits(limits: ResourceLimits): void {
  for (const key of Object.keys(limits)) {
    if (!RESOURCE_LIMIT_KEYS.has(key)) throw new Error(`resource limits: unknown field ${JSON.stringify(key)} (expected memoryBytes, cpus, pids)`);
  }
  const { memoryBytes, cpus, pids } = limits;
  if (memoryBytes !== undefined && !(Number.isSafeInteger(memoryBytes) && memoryBytes > 0)) {
    throw new Error(`resource limits: memoryBytes must be a positive integer, got ${memoryBytes}`);
  }
  // The kernel refuses a CFS quota under 1 ms, i.e. 0.01 of the 100 ms period.
  if (cpus !== undefined && !(Number.isFinite(cpus) && cpus >= 0.01)) throw new Error(`resource limits: cpus must be at least 0.01, got ${cpus}`);
  if (pids !== undefined && !(Number.isSafeInteger(pids) && pids > 0)) throw new Error(`resource limits: pids must be a positive integer, got ${pids}`);
}

/**
 * The `linux.resources` for `limits`: what withResources puts in a spec and
 * what TaskService.update takes to change a running task.
 */
export function linuxResources(limits: ResourceLimits, opts: ResourceLimitOptions = {}): LinuxResources {
  checkResourceLimits(limits);
  const out: LinuxResources = {};
  if (limits.memoryBytes !== undefined) {
    out.memory = { limit: limits.memoryBytes, ...(opts.limitSwap !== false ? { swap: limits.memoryBytes } : {}) };
  }
  if (limits.cpus !== undefined) out.cpu = { period: DEFAULT_CPU_PERIOD, quota: Math.round(limits.cpus * DEFAULT_CPU_PERIOD) };
  if (limits.pids !== undefined) out.pids = { limit: limits.pids };
  return out;
}

/** Memory (with swap pinned to it), CPU quota and pids limits. */
export function withResources(limits: ResourceLimits, opts: ResourceLimitOptions = {}): SpecOpt {
  checkResourceLimits(limits);
  return (spec) => {
    if (limits.memoryBytes !== undefined) {
      withMemoryLimit(limits.memoryBytes)(spec);
      const memory = spec.linux.resources.memory!;
      if (opts.limitSwap !== false) memory.swap = limits.memoryBytes;
      else delete memory.swap;
    }
    if (limits.cpus !== undefined) withCpuLimit({ cpus: limits.cpus })(spec);
    if (limits.pids !== undefined) withPidsLimit(limits.pids)(spec);
  };
}

// ------------------------------------------------------------------ security

/**
 * Filters the container's syscalls with `profile` (e.g. defaultSeccompProfile()).
 * The profile is checked here, so a typo fails while building the spec, not in runc.
 */
export function withSeccomp(profile: LinuxSeccomp): SpecOpt {
  checkSeccomp(profile);
  const copy = structuredClone(profile);
  return (spec) => {
    spec.linux.seccomp = structuredClone(copy);
  };
}

const SECCOMP_ACTIONS = new Set<string>([
  "SCMP_ACT_KILL",
  "SCMP_ACT_KILL_PROCESS",
  "SCMP_ACT_KILL_THREAD",
  "SCMP_ACT_TRAP",
  "SCMP_ACT_ERRNO",
  "SCMP_ACT_TRACE",
  "SCMP_ACT_ALLOW",
  "SCMP_ACT_LOG",
  "SCMP_ACT_NOTIFY",
]);
const SECCOMP_OPERATORS = new Set<string>(["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]);
const SECCOMP_ARCHES = new Set<string>([
  "SCMP_ARCH_X86",
  "SCMP_ARCH_X86_64",
  "SCMP_ARCH_X32",
  "SCMP_ARCH_ARM",
  "SCMP_ARCH_AARCH64",
  "SCMP_ARCH_PPC64LE",
  "SCMP_ARCH_S390",
  "SCMP_ARCH_S390X",
  "SCMP_ARCH_RISCV64",
]);

const isU32 = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;
const isU64 = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

function checkSeccomp(profile: LinuxSeccomp): void {
  const fail = (what: string) => {
    throw new Error(`seccomp profile: ${what}`);
  };
  if (!SECCOMP_ACTIONS.has(profile.defaultAction)) fail(`unknown defaultAction ${JSON.stringify(profile.defaultAction)}`);
  if (profile.defaultErrnoRet !== undefined && !isU32(profile.defaultErrnoRet)) fail(`defaultErrnoRet must be an errno number, got ${profile.defaultErrnoRet}`);
  for (const arch of profile.architectures ?? []) if (!SECCOMP_ARCHES.has(arch)) fail(`unknown architecture ${JSON.stringify(arch)}`);
  for (const [i, rule] of (profile.syscalls ?? []).entries()) {
    const where = `syscalls[${i}]`;
    if (!Array.isArray(rule.names) || rule.names.length === 0) fail(`${where} has no names`);
    for (const name of rule.names) if (typeof name !== "string" || !/^[a-z_][a-z0-9_]*$/.test(name)) fail(`${where}: bad syscall name ${JSON.stringify(name)}`);
    if (!SECCOMP_ACTIONS.has(rule.action)) fail(`${where}: unknown action ${JSON.stringify(rule.action)}`);
    if (rule.errnoRet !== undefined && !isU32(rule.errnoRet)) fail(`${where}: errnoRet must be an errno number, got ${rule.errnoRet}`);
    for (const arg of rule.args ?? []) {
      if (!Number.isInteger(arg.index) || arg.index < 0 || arg.index > 5) fail(`${where}: argument index must be 0–5, got ${arg.index}`);
      if (!SECCOMP_OPERATORS.has(arg.op)) fail(`${where}: unknown operator ${JSON.stringify(arg.op)}`);
      if (!isU64(arg.value) || (arg.valueTwo !== undefined && !isU64(arg.valueTwo))) fail(`${where}: argument values must be non-negative integers`);
    }
  }
}

const SYSCTL_NAME = /^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$/;

/** Sets the kernel parameter `name` (dotted, e.g. net.ipv4.ping_group_range) in the container's namespaces. */
export function withSysctl(name: string, value: string): SpecOpt {
  if (!SYSCTL_NAME.test(name)) throw new Error(`withSysctl: bad name ${JSON.stringify(name)} (expected a dotted name like net.ipv4.ping_group_range)`);
  if (typeof value !== "string" || /[\n\0]/.test(value)) throw new Error(`withSysctl: bad value for ${name}: ${JSON.stringify(value)}`);
  return (spec) => {
    spec.linux.sysctl = { ...spec.linux.sysctl, [name]: value };
  };
}

/**
 * Masks more paths: runc binds /dev/null over a file and an empty read-only tmpfs over a
 * directory; a path the host lacks is skipped by runc.
 */
export function withMaskedPaths(...paths: string[]): SpecOpt {
  for (const p of paths) if (!p.startsWith("/") || p.includes("\0")) throw new Error(`withMaskedPaths: expected an absolute path, got ${JSON.stringify(p)}`);
  return (spec) => {
    spec.linux.maskedPaths = [...new Set([...spec.linux.maskedPaths, ...paths])];
  };
}

// ------------------------------------------------------------------ devices, hooks, annotations

/** Creates a device node in the container and allows it in the device cgroup. */
export function withDevice(device: LinuxDevice, access = "rwm"): SpecOpt {
  return (spec) => {
    spec.linux.devices = [...(spec.linux.devices ?? []).filter((d) => d.path !== device.path), { ...device }];
    if (device.type === "c" || device.type === "b") {
      spec.linux.resources.devices = [
        ...(spec.linux.resources.devices ?? []),
        { allow: true, type: device.type, major: device.major, minor: device.minor, access },
      ];
    }
  };
}

export { withCdiDevices } from "./cdi.js";
export { defaultSeccompProfile } from "./seccomp.js";
