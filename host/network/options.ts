// What the workspace network is configured with and reports: its options (and those
// read from the documented environment), a container's attachment, a hygiene report.
import path from "node:path";
import type { DefaultNetworkOptions } from "./conflist.js";
import { CniConfigError } from "./errors.js";
import type { CniResult } from "./result.js";

export interface NetworkOptions {
  /** Where the network list lives (MEMOH_CNI_CONF_DIR); default /etc/cni/net.d. */
  confDir?: string;
  /** Plugin search path (MEMOH_CNI_BIN_DIR, colon-separated); default /opt/cni/bin:/usr/lib/cni. */
  pluginDirs?: string[];
  /** Cached ADD results; default /var/lib/memoh/cni/cache. */
  cacheDir?: string;
  /** Which list to use and, when it is missing, what to write (name defaults to memoh-cni). */
  defaults?: DefaultNetworkOptions;
  /** Write the default list when the named one is absent (default true). */
  writeDefault?: boolean;
  /** Workspaces on the bridge cannot reach each other (default true). */
  isolation?: boolean;
  /** Workspaces cannot open connections to the host itself, DNS excepted (default true). */
  blockHost?: boolean;
  /** Workspaces' forwarded traffic to 169.254.0.0/16 (cloud metadata) is dropped (default true). */
  blockMetadata?: boolean;
  /** Deadline of each plugin call (default 30 s). */
  pluginTimeoutMs?: number;
  ifName?: string;
  /** Extra environment for plugin processes. */
  pluginEnv?: Record<string, string>;
  /** Told about recoveries (a failed attempt, a deleted bridge); default: console.warn. */
  log?: (message: string) => void;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: "tcp" | "udp";
  hostIP?: string;
}

export interface SetupOptions {
  portMappings?: PortMapping[];
}

export interface NetworkAttachment {
  containerId: string;
  /** The container's IPv4 address. */
  ip: string;
  prefixLength: number;
  gateway?: string;
  /** Host end of the container's veth, when the plugin reported one. */
  hostInterface?: string;
  /** Whether the host end was isolated from the other workspaces' ports. */
  isolated: boolean;
  result: CniResult;
}

export interface HygieneReport {
  /** Why the bridge was deleted, when it was. */
  bridgeDeleted?: "zero-mac" | "down";
  /** Containers whose attachments (cache entries, leases) were released. */
  released: string[];
  /** Failures that did not stop the sweep (a stale entry that could not be released). */
  errors: string[];
  /**
   * Addresses on our subnets whose firewall-plugin rules (CNI-FORWARD) were removed because no
   * live container holds them; present when the list runs the firewall plugin.
   */
  firewallRulesRemoved?: string[];
  /** Whether the host/metadata guards had to be created, restored or removed to match the switches; present when the list has a bridge. */
  guardsChanged?: boolean;
  /** Containers (not live) whose ipMasq chain in the nat table was removed; present when the list masquerades. */
  ipMasqChainsRemoved?: string[];
}

function onOffEnv(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const v = env[name]?.trim().toLowerCase();
  if (v === undefined || v === "") return undefined;
  if (["0", "false", "off", "no"].includes(v)) return false;
  if (["1", "true", "on", "yes"].includes(v)) return true;
  throw new CniConfigError(`${name} must be on or off, got ${JSON.stringify(env[name])}`, undefined);
}

/** Options from the documented environment (MEMOH_CNI_CONF_DIR, MEMOH_CNI_BIN_DIR, MEMOH_DATA_ROOT). */
export function networkOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): NetworkOptions {
  const options: NetworkOptions = {};
  if (env.MEMOH_CNI_CONF_DIR) options.confDir = env.MEMOH_CNI_CONF_DIR;
  if (env.MEMOH_CNI_BIN_DIR) options.pluginDirs = env.MEMOH_CNI_BIN_DIR.split(":").filter(Boolean);
  if (env.MEMOH_DATA_ROOT) {
    options.cacheDir = path.join(env.MEMOH_DATA_ROOT, "cni", "cache");
    options.defaults = { ipamDataDir: path.join(env.MEMOH_DATA_ROOT, "cni", "ipam") };
  }
  const isolation = onOffEnv(env, "MEMOH_CNI_ISOLATION");
  if (isolation !== undefined) options.isolation = isolation;
  const blockHost = onOffEnv(env, "MEMOH_CNI_BLOCK_HOST");
  if (blockHost !== undefined) options.blockHost = blockHost;
  const blockMetadata = onOffEnv(env, "MEMOH_CNI_BLOCK_METADATA");
  if (blockMetadata !== undefined) options.blockMetadata = blockMetadata;
  const firewall = onOffEnv(env, "MEMOH_CNI_FIREWALL");
  if (firewall !== undefined) options.defaults = { ...options.defaults, firewall };
  return options;
}
