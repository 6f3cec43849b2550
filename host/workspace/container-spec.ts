// The OCI spec of a workspace container, composed from small options.
//
// The process is always the agent: tini as PID 1, the bundle's node running agent.js,
// as uid 0, in "/", whatever the image's ENTRYPOINT, CMD, USER and WORKDIR say. The
// image's ENV (plus TZ and CDI device variables) is meant for the commands the agent
// spawns, not for the agent's own node: NODE_OPTIONS, LD_PRELOAD or LD_LIBRARY_PATH of
// an image would otherwise break or hijack the agent. So the last option moves that
// environment into BRIDGE_IMAGE_ENV (a JSON list the agent hands to its children) and
// gives the agent an environment of its own.
import fs from "node:fs";
import path from "node:path";
import {
  DEFAULT_MASKED_PATHS,
  DEFAULT_PATH_ENV,
  bindMount,
  defaultSeccompProfile,
  withCdiDevices,
  withEnv,
  withHostname,
  withMaskedPaths,
  withMounts,
  withOomScoreAdj,
  withResources,
  withSeccomp,
  withSysctl,
  withTZ,
  withoutCapabilities,
  type ImageConfig,
  type Spec,
  type SpecOpt,
} from "../containerd/spec.js";
import type { CdiRegistry } from "../containerd/cdi.js";
import { swapLimitSupported } from "../containerd/cgroups.js";
import type { WorkspaceLimits } from "./limits.js";

export const AGENT_COMMAND = ["/opt/memoh/bin/tini", "-g", "--", "/opt/memoh/bin/node", "/opt/memoh/agent.js"];
export const RUNTIME_MOUNT = "/opt/memoh";
export const SOCKET_MOUNT = "/run/memoh";
export const BRIDGE_SOCKET_PATH = "/run/memoh/bridge.sock";

export interface WorkspaceSpecInput {
  containerId: string;
  /** Host paths mounted into the container. */
  resolvConf: string;
  runtimePath: string;
  socketDir: string;
  /** The image's config (its Env goes to the agent's children). */
  imageConfig: ImageConfig;
  timezone?: string;
  /** The agent's background-job limits (BRIDGE_JOB_MAX_RUNTIME_MS, BRIDGE_JOB_RETENTION_MS); unset: the agent's defaults. */
  jobs?: AgentJobLimits;
  cdiDevices: string[];
  cdiRegistry?: CdiRegistry;
  limits: WorkspaceLimits;
}

/**
 * The OOM scores of the agent and of what it spawns. Inside the workspace's memory
 * cgroup the kernel kills the process with the highest score first: the agent must be
 * the last choice, so its children are raised above it (raising needs no privilege).
 *
 * The agent itself stays at 0, never below. runc writes the spec's value while it still
 * holds CAP_SYS_RESOURCE, and the kernel then also makes that value the floor
 * (oom_score_adj_min) of the process, which every process forked in the workspace
 * inherits: with -998 there, anything in the workspace could lower itself to -998
 * without a capability, and in a host-wide OOM the kernel would kill the database,
 * containerd or the orchestrator instead of the workspace's hog. The value is written
 * explicitly (not left out) so that the floor is 0 and not what the shim inherited
 * from containerd, which often runs below 0.
 */
export const OOM_SCORES: Readonly<{ agent: number; children: number }> = Object.freeze({ agent: 0, children: 500 });

/**
 * What Docker masks beyond containerd's defaults: /proc/interrupts and each CPU's
 * thermal_throttle counters, which let a container watch what the host's other
 * processes (other workspaces included) do. The CPUs are the host's, read when the
 * spec is built.
 */
export function sideChannelPaths(cpuDir = "/sys/devices/system/cpu"): string[] {
  const paths = ["/proc/interrupts"];
  let cpus: string[] = [];
  try {
    cpus = fs.readdirSync(cpuDir).filter((name) => /^cpu[0-9]+$/.test(name));
  } catch {
    // No sysfs CPU list: nothing more to mask.
  }
  cpus.sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
  for (const cpu of cpus) {
    const throttle = path.join(cpuDir, cpu, "thermal_throttle");
    if (fs.existsSync(throttle)) paths.push(path.posix.join("/sys/devices/system/cpu", cpu, "thermal_throttle"));
  }
  return paths;
}

/**
 * The sandbox every workspace runs in: a seccomp profile in the spirit of Docker's
 * default (no namespaces, mounts, keyrings, bpf, perf, modules, kexec…), containerd's
 * default capabilities without CAP_NET_RAW, ping through ICMP datagram sockets instead
 * (as Docker does), and the masked and read-only paths of containerd's default spec
 * plus Docker's side-channel masks (sideChannelPaths).
 */
export function withWorkspaceSandbox(masked = sideChannelPaths()): SpecOpt {
  const seccomp = withSeccomp(defaultSeccompProfile());
  const caps = withoutCapabilities("CAP_NET_RAW");
  const ping = withSysctl("net.ipv4.ping_group_range", "0 2147483647");
  // No IPv6 on interfaces created after the netns (the CNI veth): the network gives
  // workspaces IPv4 only, and an interface with IPv6 on would still reach the host over
  // link-local (fe80::, the bridge's address), past the IPv4 host guard. Loopback exists
  // before this is applied and keeps ::1; a network that assigns IPv6 enables it on the
  // interface itself (CNI's ipam does). A kernel without IPv6 has no such sysctl, and runc
  // would refuse to start the container over it.
  const noIpv6 = fs.existsSync("/proc/sys/net/ipv6/conf/default/disable_ipv6") ? withSysctl("net.ipv6.conf.default.disable_ipv6", "1") : () => {};
  const masks = withMaskedPaths(...DEFAULT_MASKED_PATHS, ...masked);
  return (spec) => {
    seccomp(spec);
    caps(spec);
    ping(spec);
    noIpv6(spec);
    masks(spec);
    spec.process.noNewPrivileges = true;
  };
}

/** Memory (swap pinned to it where the host allows), CPU quota and pids of the workspace's cgroup. */
export function withWorkspaceLimits(limits: WorkspaceLimits): SpecOpt {
  return withResources(limits, { limitSwap: swapLimitSupported() });
}

/** The image's Env as the starting environment (containerd's default PATH when the image sets none). */
export function withImageEnv(config: ImageConfig): SpecOpt {
  return withEnv(config.Env ?? []);
}

/**
 * The agent process: tini + node + agent.js as root in "/", with an environment of its
 * own; everything the spec's env held so far becomes BRIDGE_IMAGE_ENV for its children.
 * Must come after every option that adds variables.
 */
/** The limits of the agent's background jobs (agent/jobs/config.ts), in milliseconds. */
export interface AgentJobLimits {
  maxRuntimeMs: number;
  retentionMs: number;
}

export function withAgentProcess(containerId: string, scores: { agent: number; children: number } = OOM_SCORES, jobs?: AgentJobLimits): SpecOpt {
  // Below 0 the workspace's floor would be below 0 too (OOM_SCORES).
  if (scores.agent < 0) throw new Error(`withAgentProcess: the agent's oom_score_adj must not be below 0, got ${scores.agent}`);
  const oom = withOomScoreAdj(scores.agent);
  return (spec: Spec) => {
    oom(spec);
    const childEnv = spec.process.env;
    spec.process.args = [...AGENT_COMMAND];
    spec.process.cwd = "/";
    spec.process.user = { uid: 0, gid: 0 };
    spec.process.env = [
      DEFAULT_PATH_ENV,
      "HOME=/root",
      `BRIDGE_SOCKET_PATH=${BRIDGE_SOCKET_PATH}`,
      `BRIDGE_WORKSPACE_ID=${containerId}`,
      `BRIDGE_IMAGE_ENV=${JSON.stringify(childEnv)}`,
      `BRIDGE_CHILD_OOM_SCORE_ADJ=${scores.children}`,
      ...(jobs ? [`BRIDGE_JOB_MAX_RUNTIME_MS=${jobs.maxRuntimeMs}`, `BRIDGE_JOB_RETENTION_MS=${jobs.retentionMs}`] : []),
    ];
  };
}

/** Every option of a workspace container's spec, in order. */
export function workspaceSpecOpts(input: WorkspaceSpecInput): SpecOpt[] {
  const opts: SpecOpt[] = [
    withImageEnv(input.imageConfig),
    withHostname(input.containerId),
    withMounts([
      bindMount(input.resolvConf, "/etc/resolv.conf", ["rbind", "ro"]),
      bindMount(input.runtimePath, RUNTIME_MOUNT, ["rbind", "ro"]),
      bindMount(input.socketDir, SOCKET_MOUNT, ["rbind", "rw"]),
    ]),
  ];
  if (input.timezone) opts.push(withTZ(input.timezone));
  if (input.cdiDevices.length > 0) opts.push(withCdiDevices(input.cdiDevices, input.cdiRegistry));
  opts.push(withWorkspaceSandbox(), withWorkspaceLimits(input.limits), withAgentProcess(input.containerId, OOM_SCORES, input.jobs));
  return opts;
}
