// The orchestrator's configuration: the `[workspace]` section of a TOML file
// (`--config`, default ./memoh-workspace.toml when present), then the
// environment variables listed in README.md "Configuration", which win. Everything is
// validated here, once, so the rest of the host trusts a typed Config.
import { X509Certificate } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { WorkspaceLimits } from "./store/types.js";
import { KEYS, NUMBER_RULES, configArg, parseNumberSetting, readFileSection, type Key, type NumericKey, type RawValue } from "./config-keys.js";

export type PullPolicy = "if_not_present" | "always" | "never";

export interface ListenAddress {
  host: string;
  port: number;
}

export interface Config {
  /** The TOML file that was read, if any. */
  configFile: string | undefined;
  /** HTTP listen address (MEMOH_LISTEN). */
  listen: ListenAddress;
  /** Admin bearer token (MEMOH_ADMIN_TOKEN); unset → the API generates one on first start. */
  adminToken: string | undefined;
  /** PostgreSQL URL (DATABASE_URL); unset → embedded PGlite under dataRoot. */
  databaseUrl: string | undefined;
  /** Absolute: sockets, backups, fallback resolv.conf, embedded DB (MEMOH_DATA_ROOT). */
  dataRoot: string;
  /** Absolute path of containerd's socket (MEMOH_CONTAINERD_ADDRESS). */
  containerdAddress: string;
  /** containerd namespace (MEMOH_NAMESPACE). */
  namespace: string;
  /** MEMOH_SNAPSHOTTER. */
  snapshotter: string;
  /** Absolute path of the runtime bundle mounted at /opt/memoh (MEMOH_RUNTIME_PATH). */
  runtimePath: string;
  /** Default workspace image (MEMOH_IMAGE). */
  image: string;
  /** MEMOH_PULL_POLICY. */
  pullPolicy: PullPolicy;
  /** CNI network config dir (MEMOH_CNI_CONF_DIR). */
  cniConfDir: string;
  /** CNI plugin search path (MEMOH_CNI_BIN_DIR, colon-separated). */
  cniBinDirs: string[];
  /** Docker-style config.json with registry credentials (MEMOH_REGISTRY_AUTH). */
  registryAuth: string | undefined;
  /** PEM bundle of extra CAs trusted for registry TLS (MEMOH_REGISTRY_CA), checked to hold certificates. */
  registryCa: string | undefined;
  /** Registry hosts that may be spoken to over plain HTTP, like loopback (MEMOH_REGISTRY_INSECURE). */
  registryInsecure: string[];
  /** Workspaces on the bridge cannot reach each other (MEMOH_CNI_ISOLATION). */
  cniIsolation: boolean;
  /** The written default network includes the CNI firewall plugin (MEMOH_CNI_FIREWALL). */
  cniFirewall: boolean;
  /** Workspaces cannot open connections to the host itself, DNS excepted (MEMOH_CNI_BLOCK_HOST). */
  cniBlockHost: boolean;
  /** Workspaces' forwarded traffic to 169.254.0.0/16, cloud metadata, is dropped (MEMOH_CNI_BLOCK_METADATA). */
  cniBlockMetadata: boolean;
  /** Default cgroup limits of a workspace (MEMOH_LIMIT_MEMORY_MB, MEMOH_LIMIT_CPUS, MEMOH_LIMIT_PIDS). */
  limits: WorkspaceLimits;
  /** How long a caller waits for a bot's lock before the call is `unavailable` (MEMOH_LOCK_TIMEOUT_MS). */
  lockTimeoutMs: number;
  /** Lifecycle events kept per workspace; older ones are pruned (MEMOH_EVENTS_KEEP). */
  eventsKeep: number;
  /** A task log larger than this is rotated (MEMOH_TASK_LOG_MAX_MB, in bytes here). */
  taskLogMaxBytes: number;
  /** Rotated task logs kept beside the current one (MEMOH_TASK_LOG_KEEP). */
  taskLogKeep: number;
  /** Largest file the API accepts in one upload, in bytes (MEMOH_UPLOAD_MAX_MB). */
  uploadMaxBytes: number;
  /** An imported data archive may unpack to at most this many bytes (MEMOH_IMPORT_MAX_MB, in bytes here). */
  importMaxBytes: number;
  /** An imported data archive may hold at most this many entries (MEMOH_IMPORT_MAX_ENTRIES). */
  importMaxEntries: number;
  /** A tool gateway session (2025 protocol line) without requests for this long is closed (MEMOH_MCP_SESSION_IDLE_S, in ms here). */
  mcpSessionIdleMs: number;
  /** Host names the tool gateway accepts besides loopback names and IP addresses (MEMOH_MCP_ALLOWED_HOSTS). */
  mcpAllowedHosts: string[];
  /** An MCP stdio connection whose client sent nothing for this long is closed (MEMOH_MCP_STDIO_IDLE_S, in ms here). */
  mcpStdioIdleMs: number;
  /** A background job in a workspace running longer is killed with its process group (MEMOH_JOB_MAX_RUNTIME_S, in ms here). */
  jobMaxRuntimeMs: number;
  /** How long an ended background job stays listed with its output (MEMOH_JOB_RETENTION_S, in ms here). */
  jobRetentionMs: number;
}

/** The image `npm run up` builds from this machine's files (works offline). */
export const DEFAULT_IMAGE = "memoh.local/workspace:latest";
export const DEFAULT_CONFIG_FILE = "memoh-workspace.toml";

/** The install dir: the folder holding host/. */
const INSTALL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export const DEFAULTS = {
  listen: "127.0.0.1:8080",
  dataRoot: "/var/lib/memoh",
  containerdAddress: "/run/containerd/containerd.sock",
  namespace: "memoh",
  snapshotter: "overlayfs",
  runtimePath: path.join(INSTALL_DIR, "runtime-bundle", "out"),
  image: DEFAULT_IMAGE,
  pullPolicy: "if_not_present" as PullPolicy,
  cniConfDir: "/etc/cni/net.d",
  cniBinDir: "/opt/cni/bin:/usr/lib/cni",
  cniIsolation: true,
  cniFirewall: true,
  cniBlockHost: true,
  cniBlockMetadata: true,
  limitMemoryMb: 2048,
  limitCpus: 2,
  limitPids: 1024,
  lockTimeoutMs: 120_000,
  eventsKeep: 1000,
  taskLogMaxMb: 10,
  taskLogKeep: 2,
  uploadMaxMb: 4096,
  importMaxMb: 16384,
  importMaxEntries: 1_000_000,
  mcpSessionIdleS: 1800,
  mcpStdioIdleS: 600,
  jobMaxRuntimeS: 1800,
  jobRetentionS: 3600,
};

const MIB = 1024 * 1024;

/** Every problem found, one per line, so an operator fixes them in one go. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

export interface LoadConfigOptions {
  /** Command-line arguments (only `--config <file>` / `--config=<file>` is read). */
  argv?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Where the default config file is looked for and relative env paths resolve. */
  cwd?: string;
}

const NAMESPACE_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

export function loadConfig(opts: LoadConfigOptions = {}): Config {
  const env = opts.env ?? process.env;
  const cwd = path.resolve(opts.cwd ?? process.cwd());
  const problems: string[] = [];

  const explicit = configArg(opts.argv ?? [], problems);
  let configFile: string | undefined;
  if (explicit !== undefined) {
    configFile = path.resolve(cwd, explicit);
    if (!fs.existsSync(configFile)) problems.push(`config file ${configFile} (from --config) does not exist`);
  } else if (fs.existsSync(path.join(cwd, DEFAULT_CONFIG_FILE))) {
    configFile = path.join(cwd, DEFAULT_CONFIG_FILE);
  }
  const raw = configFile && !problems.length ? readFileSection(configFile, problems) : new Map<Key, RawValue>();
  for (const key of Object.keys(KEYS) as Key[]) {
    const name = KEYS[key];
    const value = env[name];
    if (value !== undefined && value.trim() !== "") raw.set(key, { value: value.trim(), source: `$${name}`, baseDir: cwd });
  }

  const str = (key: Key): { value: string; source: string; baseDir: string } | undefined => {
    const v = raw.get(key);
    if (v === undefined) return undefined;
    if (typeof v.value !== "string") {
      problems.push(`${v.source}: expected a string`);
      return undefined;
    }
    if (v.value.trim() === "") return undefined;
    return { value: v.value.trim(), source: v.source, baseDir: v.baseDir };
  };
  const absPath = (key: Key, fallback: string): string => {
    const v = str(key);
    if (!v) return fallback;
    if (v.value.includes("\0")) {
      problems.push(`${v.source}: contains a NUL byte`);
      return fallback;
    }
    return path.resolve(v.baseDir, v.value);
  };

  // listen
  const listenRaw = str("listen");
  const listen = parseListen(listenRaw?.value ?? DEFAULTS.listen);
  if (typeof listen === "string") problems.push(`${listenRaw?.source ?? "listen"}: ${listen}`);

  // secrets and URLs
  const adminToken = str("admin_token");
  if (adminToken && adminToken.value.length < 16) problems.push(`${adminToken.source}: an admin token needs at least 16 characters`);
  const databaseUrl = str("database_url");
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl.value)) {
    problems.push(`${databaseUrl.source}: expected a postgres:// or postgresql:// URL`);
  }

  // containerd
  let containerdAddress = DEFAULTS.containerdAddress;
  const addr = str("containerd_address");
  if (addr) {
    const p = addr.value.replace(/^unix:\/\//, "");
    if (!path.isAbsolute(p)) problems.push(`${addr.source}: expected the absolute path of containerd's socket, got ${addr.value}`);
    else containerdAddress = path.normalize(p);
  }
  const ns = str("namespace");
  const namespace = ns?.value ?? DEFAULTS.namespace;
  if (ns && (!NAMESPACE_RE.test(ns.value) || ns.value.length > 76)) {
    problems.push(`${ns.source}: invalid containerd namespace ${JSON.stringify(ns.value)} (letters, digits, and . _ - between them)`);
  }
  const snap = str("snapshotter");
  const snapshotter = snap?.value ?? DEFAULTS.snapshotter;
  if (snap && !/^[a-z0-9][a-z0-9._-]*$/.test(snap.value)) problems.push(`${snap.source}: invalid snapshotter name ${JSON.stringify(snap.value)}`);

  // images
  const img = str("image");
  const image = img?.value ?? DEFAULTS.image;
  if (img && /\s/.test(img.value)) problems.push(`${img.source}: an image reference has no whitespace: ${JSON.stringify(img.value)}`);
  const pp = str("pull_policy");
  let pullPolicy: PullPolicy = DEFAULTS.pullPolicy;
  if (pp) {
    const v = pp.value.toLowerCase().replace(/-/g, "_");
    if (v === "if_not_present" || v === "always" || v === "never") pullPolicy = v;
    else problems.push(`${pp.source}: pull policy must be if_not_present, always or never, got ${JSON.stringify(pp.value)}`);
  }

  // CNI
  let cniBinDirs = DEFAULTS.cniBinDir.split(":");
  const bins = raw.get("cni_bin_dir");
  if (bins) {
    const list = typeof bins.value === "string" ? bins.value.split(":") : Array.isArray(bins.value) ? bins.value : undefined;
    if (!list) problems.push(`${bins.source}: expected a colon-separated string or a list of dirs`);
    else {
      const dirs = list.map((d) => d.trim()).filter(Boolean);
      if (!dirs.length) problems.push(`${bins.source}: no plugin dir given`);
      else cniBinDirs = dirs.map((d) => path.resolve(bins.baseDir, d));
    }
  }
  const onOff = (key: "cni_isolation" | "cni_firewall" | "cni_block_host" | "cni_block_metadata", fallback: boolean): boolean => {
    const v = raw.get(key);
    if (!v) return fallback;
    const b = parseBool(v.value);
    if (b === undefined) problems.push(`${v.source}: expected on/off (true/false), got ${JSON.stringify(v.value)}`);
    return b ?? fallback;
  };
  const cniIsolation = onOff("cni_isolation", DEFAULTS.cniIsolation);
  const cniFirewall = onOff("cni_firewall", DEFAULTS.cniFirewall);
  const cniBlockHost = onOff("cni_block_host", DEFAULTS.cniBlockHost);
  const cniBlockMetadata = onOff("cni_block_metadata", DEFAULTS.cniBlockMetadata);

  const registryAuth = str("registry_auth");
  const registryCaRaw = str("registry_ca");
  let registryCa: string | undefined;
  if (registryCaRaw) {
    registryCa = path.resolve(registryCaRaw.baseDir, registryCaRaw.value);
    const problem = checkPemBundle(registryCa);
    if (problem) problems.push(`${registryCaRaw.source}: ${problem}`);
  }

  // Registry hosts ("host" or "host:port"), comma-separated in the environment.
  const registryInsecure: string[] = [];
  const insecureRaw = raw.get("registry_insecure");
  if (insecureRaw) {
    const list = typeof insecureRaw.value === "string" ? insecureRaw.value.split(",") : Array.isArray(insecureRaw.value) ? insecureRaw.value : undefined;
    if (!list) problems.push(`${insecureRaw.source}: expected a comma-separated string or a list of registry hosts`);
    else {
      for (const h of list.map((x) => x.trim()).filter(Boolean)) {
        if (/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(h)) registryInsecure.push(h);
        else problems.push(`${insecureRaw.source}: ${JSON.stringify(h)} is not a registry host ("host" or "host:port", no scheme or path)`);
      }
    }
  }

  // Host names of the tool gateway (DNS-rebinding protection), comma-separated in the environment.
  const mcpAllowedHosts: string[] = [];
  const hostsRaw = raw.get("mcp_allowed_hosts");
  if (hostsRaw) {
    const list = typeof hostsRaw.value === "string" ? hostsRaw.value.split(",") : Array.isArray(hostsRaw.value) ? hostsRaw.value : undefined;
    if (!list) problems.push(`${hostsRaw.source}: expected a comma-separated string or a list of host names`);
    else {
      for (const h of list.map((x) => String(x).trim()).filter(Boolean)) {
        if (/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(h)) mcpAllowedHosts.push(h.toLowerCase());
        else problems.push(`${hostsRaw.source}: ${JSON.stringify(h)} is not a host name (no scheme, port or path)`);
      }
    }
  }

  const numberSetting = (key: NumericKey, fallback: number): number => {
    const v = raw.get(key);
    if (!v) return fallback;
    const n = parseNumberSetting(v.value, NUMBER_RULES[key]);
    if (typeof n === "string") {
      problems.push(`${v.source}: ${n}`);
      return fallback;
    }
    return n;
  };
  const limits: WorkspaceLimits = {
    memoryBytes: numberSetting("limit_memory_mb", DEFAULTS.limitMemoryMb) * MIB,
    cpus: numberSetting("limit_cpus", DEFAULTS.limitCpus),
    pids: numberSetting("limit_pids", DEFAULTS.limitPids),
  };

  const config: Config = {
    configFile,
    listen: typeof listen === "string" ? { host: "127.0.0.1", port: 8080 } : listen,
    adminToken: adminToken?.value,
    databaseUrl: databaseUrl?.value,
    dataRoot: absPath("data_root", DEFAULTS.dataRoot),
    containerdAddress,
    namespace,
    snapshotter,
    runtimePath: absPath("runtime_path", DEFAULTS.runtimePath),
    image,
    pullPolicy,
    cniConfDir: absPath("cni_conf_dir", DEFAULTS.cniConfDir),
    cniBinDirs,
    registryAuth: registryAuth ? path.resolve(registryAuth.baseDir, registryAuth.value) : undefined,
    registryCa,
    registryInsecure,
    cniIsolation,
    cniFirewall,
    cniBlockHost,
    cniBlockMetadata,
    limits,
    lockTimeoutMs: numberSetting("lock_timeout_ms", DEFAULTS.lockTimeoutMs),
    eventsKeep: numberSetting("events_keep", DEFAULTS.eventsKeep),
    taskLogMaxBytes: numberSetting("task_log_max_mb", DEFAULTS.taskLogMaxMb) * MIB,
    taskLogKeep: numberSetting("task_log_keep", DEFAULTS.taskLogKeep),
    uploadMaxBytes: numberSetting("upload_max_mb", DEFAULTS.uploadMaxMb) * MIB,
    importMaxBytes: numberSetting("import_max_mb", DEFAULTS.importMaxMb) * MIB,
    importMaxEntries: numberSetting("import_max_entries", DEFAULTS.importMaxEntries),
    mcpSessionIdleMs: Math.max(1, Math.round(numberSetting("mcp_session_idle_s", DEFAULTS.mcpSessionIdleS) * 1000)),
    mcpAllowedHosts,
    mcpStdioIdleMs: Math.max(1, Math.round(numberSetting("mcp_stdio_idle_s", DEFAULTS.mcpStdioIdleS) * 1000)),
    jobMaxRuntimeMs: numberSetting("job_max_runtime_s", DEFAULTS.jobMaxRuntimeS) * 1000,
    jobRetentionMs: numberSetting("job_retention_s", DEFAULTS.jobRetentionS) * 1000,
  };
  if (problems.length) throw new ConfigError(problems);
  return config;
}

/** Why `file` is not a usable PEM CA bundle, or undefined when it is. */
function checkPemBundle(file: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === "ENOENT" ? `CA bundle ${file} does not exist` : `cannot read CA bundle ${file}: ${(err as Error).message}`;
  }
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!certs.length) return `CA bundle ${file} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`;
  for (const [i, cert] of certs.entries()) {
    try {
      new X509Certificate(cert);
    } catch (err) {
      return `CA bundle ${file}: certificate ${i + 1} is not valid: ${(err as Error).message}`;
    }
  }
  return undefined;
}

function parseBool(v: RawValue["value"]): boolean | undefined {
  if (typeof v === "boolean") return v;
  if (typeof v !== "string") return undefined;
  const s = v.trim().toLowerCase();
  if (["1", "true", "on", "yes"].includes(s)) return true;
  if (["0", "false", "off", "no"].includes(s)) return false;
  return undefined;
}

/** "host:port", "[v6]:port" or ":port" (all interfaces); returns an error text when invalid. */
export function parseListen(value: string): ListenAddress | string {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(value.trim());
  if (!m) return `expected host:port, got ${JSON.stringify(value)}`;
  const port = Number(m[3]);
  if (port > 65535) return `port ${port} out of range`;
  const host = m[1] ?? (m[2] || "0.0.0.0");
  return { host, port };
}
