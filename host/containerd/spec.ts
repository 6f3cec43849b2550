// The OCI runtime spec (the subset we write), and small options that each change
// one thing, composed with buildSpec — containerd's oci/spec_opts.go in TypeScript.
//
//   const spec = buildSpec(defaultUnixSpec(ns, id), withImageConfig(cfg), withMounts([...]), withMemoryLimit(512 << 20));

// ------------------------------------------------------------------ types

export interface Spec {
  ociVersion: string;
  process: Process;
  root: { path: string; readonly?: boolean };
  hostname?: string;
  mounts: Mount[];
  hooks?: Hooks;
  annotations?: Record<string, string>;
  linux: Linux;
}

export interface User {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
  username?: string;
}

export interface Capabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
  inheritable?: string[];
  ambient?: string[];
}

export interface Rlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface Process {
  terminal?: boolean;
  user: User;
  args: string[];
  env: string[];
  cwd: string;
  capabilities: Capabilities;
  rlimits: Rlimit[];
  noNewPrivileges: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
}

export interface Mount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface Hook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export interface Hooks {
  prestart?: Hook[];
  createRuntime?: Hook[];
  createContainer?: Hook[];
  startContainer?: Hook[];
  poststart?: Hook[];
  poststop?: Hook[];
}

export type NamespaceType = "pid" | "network" | "mount" | "ipc" | "uts" | "user" | "cgroup";

export interface LinuxNamespace {
  type: NamespaceType;
  path?: string;
}

/** A device node runc creates in the container. */
export interface LinuxDevice {
  path: string;
  type: "c" | "b" | "u" | "p";
  major: number;
  minor: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}

/** A device cgroup rule. */
export interface LinuxDeviceCgroup {
  allow: boolean;
  type?: "a" | "c" | "b";
  major?: number;
  minor?: number;
  access?: string;
}

export interface LinuxResources {
  devices?: LinuxDeviceCgroup[];
  memory?: { limit?: number; reservation?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit: number };
}

export interface Linux {
  uidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
  gidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
  sysctl?: Record<string, string>;
  resources: LinuxResources;
  cgroupsPath: string;
  namespaces: LinuxNamespace[];
  devices?: LinuxDevice[];
  maskedPaths: string[];
  readonlyPaths: string[];
}

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

/** Runs the process as numeric uid/gid. */
export function withUserId(uid: number, gid = uid, additionalGids?: number[]): SpecOpt {
  return (spec) => {
    spec.process.user = { uid, gid, ...(additionalGids ? { additionalGids } : {}) };
  };
}

export interface PasswdFiles {
  /** Contents of the image's /etc/passwd. */
  passwd?: string;
  /** Contents of the image's /etc/group. */
  group?: string;
}

function lookupId(file: string | undefined, name: string, idField: number): number | undefined {
  for (const line of (file ?? "").split("\n")) {
    const fields = line.split(":");
    if (fields[0] === name && fields[idField] !== undefined && /^\d+$/.test(fields[idField]!)) return Number(fields[idField]);
  }
  return undefined;
}

/**
 * Parses an image's User ("uid", "uid:gid", "name", "name:group"). Names are
 * resolved only through `files` (the image's /etc/passwd and /etc/group); without
 * them a name is an error that says so.
 */
export function parseUser(user: string, files: PasswdFiles = {}): { uid: number; gid: number } {
  const [u = "", g] = user.split(":", 2);
  let uid: number;
  let gidFromPasswd: number | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gidFromPasswd = lookupPasswdGidByUid(files.passwd, uid);
  } else {
    const found = lookupId(files.passwd, u, 2);
    if (found === undefined) {
      throw new Error(`image user "${user}": user name "${u}" ${files.passwd === undefined ? "cannot be resolved without the image's /etc/passwd (use a numeric uid)" : "is not in the image's /etc/passwd"}`);
    }
    uid = found;
    gidFromPasswd = lookupId(files.passwd, u, 3);
  }
  if (g === undefined || g === "") return { uid, gid: gidFromPasswd ?? (/^\d+$/.test(u) ? 0 : uid) };
  if (/^\d+$/.test(g)) return { uid, gid: Number(g) };
  const gid = lookupId(files.group, g, 2);
  if (gid === undefined) {
    throw new Error(`image user "${user}": group name "${g}" ${files.group === undefined ? "cannot be resolved without the image's /etc/group (use a numeric gid)" : "is not in the image's /etc/group"}`);
  }
  return { uid, gid };
}

function lookupPasswdGidByUid(passwd: string | undefined, uid: number): number | undefined {
  for (const line of (passwd ?? "").split("\n")) {
    const f = line.split(":");
    if (f[2] === String(uid) && f[3] !== undefined && /^\d+$/.test(f[3])) return Number(f[3]);
  }
  return undefined;
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

export function withHooks(hooks: Hooks): SpecOpt {
  return (spec) => {
    const merged: Hooks = { ...spec.hooks };
    for (const [k, list] of Object.entries(hooks) as Array<[keyof Hooks, Hook[] | undefined]>) {
      if (list && list.length > 0) merged[k] = [...(merged[k] ?? []), ...list];
    }
    spec.hooks = merged;
  };
}

export function withAnnotations(annotations: Record<string, string>): SpecOpt {
  return (spec) => {
    spec.annotations = { ...spec.annotations, ...annotations };
  };
}

export { withCdiDevices } from "./cdi.js";
