// The OCI runtime spec's types: the subset the host writes (config.json of a
// container, as containerd's oci package and the runtime-spec Go types define it).
// The options that build one are in spec.ts.

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

export type SeccompAction =
  | "SCMP_ACT_KILL"
  | "SCMP_ACT_KILL_PROCESS"
  | "SCMP_ACT_KILL_THREAD"
  | "SCMP_ACT_TRAP"
  | "SCMP_ACT_ERRNO"
  | "SCMP_ACT_TRACE"
  | "SCMP_ACT_ALLOW"
  | "SCMP_ACT_LOG"
  | "SCMP_ACT_NOTIFY";

export type SeccompArch =
  | "SCMP_ARCH_X86"
  | "SCMP_ARCH_X86_64"
  | "SCMP_ARCH_X32"
  | "SCMP_ARCH_ARM"
  | "SCMP_ARCH_AARCH64"
  | "SCMP_ARCH_PPC64LE"
  | "SCMP_ARCH_S390"
  | "SCMP_ARCH_S390X"
  | "SCMP_ARCH_RISCV64";

/** libseccomp comparison; SCMP_CMP_MASKED_EQ is `(arg & value) == valueTwo`. */
export type SeccompOperator = "SCMP_CMP_NE" | "SCMP_CMP_LT" | "SCMP_CMP_LE" | "SCMP_CMP_EQ" | "SCMP_CMP_GE" | "SCMP_CMP_GT" | "SCMP_CMP_MASKED_EQ";

export interface LinuxSeccompArg {
  /** Which syscall argument, 0–5. */
  index: number;
  value: number;
  valueTwo?: number;
  op: SeccompOperator;
}

export interface LinuxSyscall {
  names: string[];
  action: SeccompAction;
  /** The errno of SCMP_ACT_ERRNO / SCMP_ACT_TRACE (default EPERM). */
  errnoRet?: number;
  /** All must match (AND); several rules for the same name are alternatives (OR). */
  args?: LinuxSeccompArg[];
}

export interface LinuxSeccomp {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures?: SeccompArch[];
  flags?: string[];
  syscalls?: LinuxSyscall[];
}

export interface Linux {
  uidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
  gidMappings?: Array<{ containerID: number; hostID: number; size: number }>;
  sysctl?: Record<string, string>;
  resources: LinuxResources;
  cgroupsPath: string;
  namespaces: LinuxNamespace[];
  devices?: LinuxDevice[];
  seccomp?: LinuxSeccomp;
  maskedPaths: string[];
  readonlyPaths: string[];
}
