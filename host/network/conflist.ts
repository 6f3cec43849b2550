// The CNI network configuration list (.conflist), or a single network config (.conf) taken
// as a one-plugin list. Loaded from the conf dir, validated, and written with the
// default when the product's own list (named `memoh-cni`) is absent.
import fs from "node:fs";
import path from "node:path";
import { isIP } from "node:net";
import { CniConfigError } from "./errors.js";
import { isJsonObject, type JsonObject } from "./result.js";

export const DEFAULT_CONF_DIR = "/etc/cni/net.d";
export const DEFAULT_NETWORK_NAME = "memoh-cni";
/** What Debian 12's containernetworking-plugins (1.1.1) speak at most. */
export const DEFAULT_CNI_VERSION = "1.0.0";
export const SUPPORTED_CNI_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/** Linux IFNAMSIZ - 1. */
export const MAX_IFNAME_LENGTH = 15;

export interface PluginConf extends JsonObject {
  type: string;
}

export interface NetworkConfigList {
  name: string;
  cniVersion: string;
  /** Skip CHECK for this list (libcni's `disableCheck`). */
  disableCheck: boolean;
  plugins: PluginConf[];
  /** The file it came from, when loaded from disk. */
  file?: string;
}

export interface DefaultNetworkOptions {
  name?: string;
  cniVersion?: string;
  /** Linux bridge name (≤ 15 chars); default cni0. */
  bridge?: string;
  /** IPv4 subnet in CIDR notation; default 10.88.0.0/16. */
  subnet?: string;
  /** host-local's lease directory; default /var/lib/memoh/cni/ipam. */
  ipamDataDir?: string;
  ipMasq?: boolean;
  hairpinMode?: boolean;
  /** Append the portmap plugin (capability portMappings); default true. */
  portmap?: boolean;
  /**
   * Append the firewall plugin (iptables backend), which accepts each container's traffic in
   * the filter chain CNI-FORWARD: without it a host whose FORWARD policy is DROP (any host
   * with Docker) forwards nothing for the workspaces. Default true.
   */
  firewall?: boolean;
}

export const DEFAULT_SUBNET = "10.88.0.0/16";
export const DEFAULT_BRIDGE = "cni0";
export const DEFAULT_IPAM_DATA_DIR = "/var/lib/memoh/cni/ipam";

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const CONF_EXTENSIONS = [".conflist", ".conf", ".json"];

const ipv4ToNumber = (ip: string): number => ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
const prefixMask = (prefix: number): number => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** Parses "a.b.c/n"; undefined when it is not an IPv4 CIDR. */
export function parseIPv4Cidr(cidr: string): { network: number; prefix: number } | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
  if (m === null || isIP(m[1]!) !== 4) return undefined;
  const prefix = Number(m[2]);
  if (prefix > 32) return undefined;
  return { network: (ipv4ToNumber(m[1]!) & prefixMask(prefix)) >>> 0, prefix };
}

/** Whether the IPv4 address `ip` lies in the parsed CIDR. */
export function ipv4InCidr(ip: string, cidr: { network: number; prefix: number }): boolean {
  return ((ipv4ToNumber(ip) & prefixMask(cidr.prefix)) >>> 0) === cidr.network;
}

export function ipv4ToString(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");
}

/** The default network: bridge + host-local (+ portmap) (+ firewall), podman's order. */
export function defaultConfList(options: DefaultNetworkOptions = {}): JsonObject {
  const subnet = options.subnet ?? DEFAULT_SUBNET;
  const parsed = parseIPv4Cidr(subnet);
  if (parsed === undefined || parsed.prefix > 30) throw new CniConfigError(`subnet ${subnet} is not an IPv4 CIDR with room for hosts`, undefined);
  const plugins: JsonObject[] = [
    {
      type: "bridge",
      bridge: options.bridge ?? DEFAULT_BRIDGE,
      isGateway: true,
      ipMasq: options.ipMasq ?? true,
      hairpinMode: options.hairpinMode ?? true,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: `${ipv4ToString(parsed.network)}/${parsed.prefix}` }]],
        routes: [{ dst: "0.0.0.0/0" }],
        dataDir: options.ipamDataDir ?? DEFAULT_IPAM_DATA_DIR,
      },
    },
  ];
  if (options.portmap ?? true) plugins.push({ type: "portmap", capabilities: { portMappings: true } });
  if (options.firewall ?? true) {
    const version = options.cniVersion ?? DEFAULT_CNI_VERSION;
    if (version.startsWith("0.3.")) {
      throw new CniConfigError(`the firewall plugin needs cniVersion 0.4.0 or later (got ${version}); set firewall: false to leave it out`, undefined);
    }
    // Explicit backend: without it the plugin asks D-Bus for firewalld first.
    plugins.push({ type: "firewall", backend: "iptables" });
  }
  const list = {
    cniVersion: options.cniVersion ?? DEFAULT_CNI_VERSION,
    name: options.name ?? DEFAULT_NETWORK_NAME,
    plugins,
  };
  parseConfList(JSON.stringify(list)); // the options themselves must make a valid list
  return list;
}

function validatePlugin(p: unknown, n: number, file: string | undefined): PluginConf {
  const where = `plugins[${n}]`;
  if (!isJsonObject(p)) throw new CniConfigError(`${where} is not an object`, file);
  if (typeof p.type !== "string" || p.type === "" || p.type.includes("/")) {
    throw new CniConfigError(`${where}.type must be a plugin binary name`, file);
  }
  if (p.capabilities !== undefined) {
    if (!isJsonObject(p.capabilities) || !Object.values(p.capabilities).every((v) => typeof v === "boolean")) {
      throw new CniConfigError(`${where}.capabilities must map names to booleans`, file);
    }
  }
  if (p.type === "bridge" && p.bridge !== undefined) {
    if (typeof p.bridge !== "string" || !/^[a-zA-Z0-9_.-]+$/.test(p.bridge) || p.bridge.length > MAX_IFNAME_LENGTH) {
      throw new CniConfigError(`${where}.bridge must be an interface name of at most ${MAX_IFNAME_LENGTH} characters`, file);
    }
  }
  if (p.ipam !== undefined) {
    if (!isJsonObject(p.ipam)) throw new CniConfigError(`${where}.ipam is not an object`, file);
    if (typeof p.ipam.type !== "string" || p.ipam.type === "") throw new CniConfigError(`${where}.ipam.type is missing`, file);
    for (const subnet of ipamSubnets(p.ipam)) {
      if (subnet === undefined || (isIP(subnet.split("/")[0] ?? "") === 0 || !/\/\d{1,3}$/.test(subnet))) {
        throw new CniConfigError(`${where}.ipam has a subnet that is not in CIDR notation: ${String(subnet)}`, file);
      }
    }
    if (p.ipam.dataDir !== undefined && (typeof p.ipam.dataDir !== "string" || !path.isAbsolute(p.ipam.dataDir))) {
      throw new CniConfigError(`${where}.ipam.dataDir must be an absolute path`, file);
    }
  }
  return p as PluginConf;
}

/** Subnet strings named by a host-local style ipam section (ranges or the older subnet key). */
function ipamSubnets(ipam: JsonObject): Array<string | undefined> {
  const out: Array<string | undefined> = [];
  if (ipam.subnet !== undefined) out.push(typeof ipam.subnet === "string" ? ipam.subnet : undefined);
  if (ipam.ranges !== undefined) {
    if (!Array.isArray(ipam.ranges)) return [undefined];
    for (const set of ipam.ranges) {
      if (!Array.isArray(set)) return [undefined];
      for (const r of set) out.push(isJsonObject(r) && typeof r.subnet === "string" ? r.subnet : undefined);
    }
  }
  return out;
}

/** Parses and validates a .conflist (or a single-plugin .conf) document. */
export function parseConfList(text: string, file?: string): NetworkConfigList {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CniConfigError(`not valid JSON: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  if (!isJsonObject(doc)) throw new CniConfigError("not a JSON object", file);
  if (typeof doc.name !== "string" || !NAME_RE.test(doc.name)) {
    throw new CniConfigError(`name must match ${NAME_RE.source} (got ${JSON.stringify(doc.name)})`, file);
  }
  if (typeof doc.cniVersion !== "string" || !SUPPORTED_CNI_VERSIONS.includes(doc.cniVersion)) {
    throw new CniConfigError(
      `cniVersion ${JSON.stringify(doc.cniVersion)} is not one of ${SUPPORTED_CNI_VERSIONS.join(", ")}`,
      file,
    );
  }
  let rawPlugins: unknown[];
  if (doc.plugins !== undefined) {
    if (!Array.isArray(doc.plugins) || doc.plugins.length === 0) throw new CniConfigError("plugins must be a non-empty array", file);
    rawPlugins = doc.plugins;
  } else if (typeof doc.type === "string") {
    // A single network config (.conf): the document is the plugin's own config.
    const { name: _name, cniVersion: _version, ...plugin } = doc;
    rawPlugins = [plugin];
  } else {
    throw new CniConfigError("neither a plugins list nor a plugin type", file);
  }
  if (doc.disableCheck !== undefined && typeof doc.disableCheck !== "boolean") {
    throw new CniConfigError("disableCheck must be a boolean", file);
  }
  const list: NetworkConfigList = {
    name: doc.name,
    cniVersion: doc.cniVersion,
    disableCheck: doc.disableCheck === true,
    plugins: rawPlugins.map((p, n) => validatePlugin(p, n, file)),
  };
  if (file !== undefined) list.file = file;
  return list;
}

export function readConfList(file: string): NetworkConfigList {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CniConfigError(`cannot read: ${err instanceof Error ? err.message : String(err)}`, file);
  }
  return parseConfList(text, file);
}

function confFiles(confDir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(confDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  return names
    .filter((n) => CONF_EXTENSIONS.includes(path.extname(n)))
    .sort()
    .map((n) => path.join(confDir, n));
}

/**
 * The list named `name` in confDir: a file whose base name is the network name
 * (`memoh-cni.conflist`) wins; otherwise any file whose `name` field matches. Without a name,
 * the first file in lexical order (libcni's rule). Undefined when there is none; a matching
 * file that does not validate throws.
 */
export function loadConfList(confDir: string = DEFAULT_CONF_DIR, name?: string): NetworkConfigList | undefined {
  const files = confFiles(confDir);
  if (name === undefined) return files.length > 0 ? readConfList(files[0]!) : undefined;
  const byFileName = files.find((f) => path.basename(f, path.extname(f)) === name);
  if (byFileName !== undefined) {
    const list = readConfList(byFileName);
    if (list.name !== name) throw new CniConfigError(`network name is ${list.name}, expected ${name}`, byFileName);
    return list;
  }
  for (const f of files) {
    let doc: unknown;
    try {
      doc = JSON.parse(fs.readFileSync(f, "utf8"));
    } catch {
      continue; // someone else's broken file is not our problem
    }
    if (isJsonObject(doc) && doc.name === name) return readConfList(f);
  }
  return undefined;
}

/** Loads the named list, writing `<confDir>/<name>.conflist` from the defaults when absent. */
export function ensureConfList(confDir: string = DEFAULT_CONF_DIR, defaults: DefaultNetworkOptions = {}): NetworkConfigList {
  const name = defaults.name ?? DEFAULT_NETWORK_NAME;
  const existing = loadConfList(confDir, name);
  if (existing !== undefined) return existing;
  const file = path.join(confDir, `${name}.conflist`);
  fs.mkdirSync(confDir, { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(defaultConfList(defaults), null, 2)}\n`, { mode: 0o644 });
  fs.renameSync(tmp, file);
  return readConfList(file);
}

/** The bridge plugin's entry, if the list has one. */
export function bridgePlugin(list: NetworkConfigList): PluginConf | undefined {
  return list.plugins.find((p) => p.type === "bridge");
}

/** The bridge device the list's bridge plugin manages (the plugin's default is cni0). */
export function bridgeName(list: NetworkConfigList): string | undefined {
  const p = bridgePlugin(list);
  if (p === undefined) return undefined;
  return typeof p.bridge === "string" ? p.bridge : DEFAULT_BRIDGE;
}

/** IPv4 subnets allocated by the bridge plugin's IPAM. */
export function ipv4Subnets(list: NetworkConfigList): string[] {
  const ipam = bridgePlugin(list)?.ipam;
  if (!isJsonObject(ipam)) return [];
  return ipamSubnets(ipam)
    .filter((s): s is string => s !== undefined)
    .map((s) => parseIPv4Cidr(s))
    .filter((c): c is { network: number; prefix: number } => c !== undefined)
    .map((c) => `${ipv4ToString(c.network)}/${c.prefix}`);
}

/** host-local's lease directory for this network (its default is /var/lib/cni/networks). */
export function ipamLeaseDir(list: NetworkConfigList): string | undefined {
  const ipam = bridgePlugin(list)?.ipam;
  if (!isJsonObject(ipam) || ipam.type !== "host-local") return undefined;
  const dataDir = typeof ipam.dataDir === "string" ? ipam.dataDir : "/var/lib/cni/networks";
  return path.join(dataDir, list.name);
}

/**
 * Whether the list runs the firewall plugin with its iptables backend (explicit, or the
 * default when firewalld is not running), i.e. leaves per-address rules in CNI-FORWARD.
 */
export function iptablesFirewallEnabled(list: NetworkConfigList): boolean {
  return list.plugins.some((p) => p.type === "firewall" && (p.backend === undefined || p.backend === "iptables"));
}

/** Whether the bridge plugin masquerades traffic leaving the subnet. */
export function ipMasqEnabled(list: NetworkConfigList): boolean {
  return bridgePlugin(list)?.ipMasq === true;
}
