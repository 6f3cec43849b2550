// Host-side link and firewall operations the runner needs around the plugins, through
// iproute2 (`ip`, `bridge`) and `iptables` with JSON output where it exists.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { isJsonObject } from "./result.js";

const TOOL_PATH = [...new Set([...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])]
  .filter(Boolean)
  .join(":");
const TOOL_TIMEOUT_MS = 10_000;

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class HostToolError extends Error {
  constructor(
    readonly argv: string[],
    readonly result: ToolResult,
  ) {
    super(`${argv.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim()}`);
    this.name = "HostToolError";
  }
}

export function runTool(cmd: string, args: string[], timeoutMs = TOOL_TIMEOUT_MS): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, PATH: TOOL_PATH }, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
  });
}

async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await runTool(cmd, args);
  if (r.code !== 0) throw new HostToolError([cmd, ...args], r);
  return r.stdout;
}

const NO_DEVICE = /does not exist|Cannot find device|No such device/i;

export interface LinkInfo {
  name: string;
  /** MAC address, lower case. */
  address: string;
  /** UP, DOWN, UNKNOWN, LOWERLAYERDOWN… */
  operstate: string;
  flags: string[];
  /** linkinfo.info_kind: bridge, veth… ("" when none). */
  kind: string;
  /** The bridge this link is a port of. */
  master?: string;
}

function parseLinks(stdout: string): LinkInfo[] {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout === "" ? "[]" : stdout);
  } catch {
    throw new Error(`ip -j printed invalid JSON: ${stdout.slice(0, 200)}`);
  }
  if (!Array.isArray(doc)) return [];
  return doc.filter(isJsonObject).map((l) => {
    const info: LinkInfo = {
      name: typeof l.ifname === "string" ? l.ifname : "",
      address: typeof l.address === "string" ? l.address.toLowerCase() : "",
      operstate: typeof l.operstate === "string" ? l.operstate : "UNKNOWN",
      flags: Array.isArray(l.flags) ? l.flags.filter((f): f is string => typeof f === "string") : [],
      kind: isJsonObject(l.linkinfo) && typeof l.linkinfo.info_kind === "string" ? l.linkinfo.info_kind : "",
    };
    if (typeof l.master === "string") info.master = l.master;
    return info;
  });
}

export async function getLink(name: string): Promise<LinkInfo | undefined> {
  const r = await runTool("ip", ["-j", "-d", "link", "show", "dev", name]);
  if (r.code !== 0) {
    if (NO_DEVICE.test(r.stderr)) return undefined;
    throw new HostToolError(["ip", "-j", "-d", "link", "show", "dev", name], r);
  }
  return parseLinks(r.stdout)[0];
}

/** Deletes a link; true when it existed. */
export async function deleteLink(name: string): Promise<boolean> {
  const r = await runTool("ip", ["link", "del", "dev", name]);
  if (r.code === 0) return true;
  if (NO_DEVICE.test(r.stderr)) return false;
  throw new HostToolError(["ip", "link", "del", "dev", name], r);
}

/** Names of the links enslaved to a bridge ([] when the bridge does not exist). */
export async function bridgePorts(bridge: string): Promise<string[]> {
  const r = await runTool("ip", ["-j", "link", "show", "master", bridge]);
  if (r.code !== 0) {
    if (NO_DEVICE.test(r.stderr)) return [];
    throw new HostToolError(["ip", "-j", "link", "show", "master", bridge], r);
  }
  return parseLinks(r.stdout).map((l) => l.name);
}

export function isZeroMac(mac: string): boolean {
  return /^(00:){5}00$/.test(mac);
}

/**
 * Bridge port isolation (kernel ≥ 4.18): isolated ports cannot exchange frames with each
 * other, only with non-isolated ports and the bridge device itself (the host).
 */
export async function setPortIsolated(port: string, isolated: boolean): Promise<void> {
  await mustRun("bridge", ["link", "set", "dev", port, "isolated", isolated ? "on" : "off"]);
}

export async function isPortIsolated(port: string): Promise<boolean> {
  const out = await mustRun("bridge", ["-j", "-d", "link", "show", "dev", port]);
  const doc: unknown = JSON.parse(out === "" ? "[]" : out);
  return Array.isArray(doc) && isJsonObject(doc[0]) && doc[0].isolated === true;
}

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

export function enableIpForward(): void {
  if (fs.readFileSync(IP_FORWARD, "utf8").trim() !== "1") fs.writeFileSync(IP_FORWARD, "1");
}

function masqueradeRule(subnet: string, comment: string): string[] {
  return ["POSTROUTING", "-s", subnet, "!", "-d", subnet, "-m", "comment", "--comment", comment, "-j", "MASQUERADE"];
}

/** Adds `-s subnet ! -d subnet -j MASQUERADE` to nat POSTROUTING unless present; true when added. */
export async function ensureMasquerade(subnet: string, comment: string): Promise<boolean> {
  const rule = masqueradeRule(subnet, comment);
  const check = await runTool("iptables", ["-w", "5", "-t", "nat", "-C", ...rule]);
  if (check.code === 0) return false;
  await mustRun("iptables", ["-w", "5", "-t", "nat", "-A", ...rule]);
  return true;
}

/** Removes every copy of the rule ensureMasquerade adds. */
export async function removeMasquerade(subnet: string, comment: string): Promise<void> {
  const rule = masqueradeRule(subnet, comment);
  for (let i = 0; i < 16; i++) {
    const r = await runTool("iptables", ["-w", "5", "-t", "nat", "-D", ...rule]);
    if (r.code !== 0) return;
  }
}

/** The per-container nat chain of the bridge plugin's ipMasq (plugins/pkg/utils.FormatChainName). */
export function ipMasqChainName(networkName: string, containerId: string): string {
  return `CNI-${createHash("sha512").update(networkName + containerId).digest("hex").slice(0, 24)}`;
}

/**
 * Removes the bridge plugin's ipMasq chain of a container and the POSTROUTING rules that
 * jump to it. The plugin does this itself on DEL only while the netns exists; for a
 * container that vanished without a DEL it is left behind. True when anything was removed.
 */
export async function removeIpMasqChain(networkName: string, containerId: string): Promise<boolean> {
  const chain = ipMasqChainName(networkName, containerId);
  // Rules are deleted by their spec, never by line number: other containers' setups and
  // teardowns change POSTROUTING concurrently, and a number read a moment ago may by now
  // name another rule (or none: "Index of deletion too big").
  const listed = await runTool("iptables", ["-w", "5", "-t", "nat", "-S", "POSTROUTING"]);
  if (listed.code !== 0) throw new HostToolError(["iptables", "-t", "nat", "-S", "POSTROUTING"], listed);
  const rules = listed.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith("-A POSTROUTING ") && l.split(/\s+/).includes(chain))
    .map((l) => ruleSpec(l.slice("-A POSTROUTING ".length)));
  let removed = false;
  for (const spec of rules) {
    const r = await runTool("iptables", ["-w", "5", "-t", "nat", "-D", "POSTROUTING", ...spec]);
    if (r.code === 0) removed = true;
    else if (!/does not exist|No chain\/target\/match|Bad rule|doesn't exist/i.test(r.stderr)) throw new HostToolError(["iptables", "-t", "nat", "-D", "POSTROUTING", ...spec], r);
  }
  const flushed = await runTool("iptables", ["-w", "5", "-t", "nat", "-F", chain]);
  if (flushed.code === 0) {
    const deleted = await runTool("iptables", ["-w", "5", "-t", "nat", "-X", chain]);
    // Gone meanwhile (a concurrent release of the same container) is fine.
    if (deleted.code !== 0 && !/No chain|does not exist|doesn't exist/i.test(deleted.stderr)) throw new HostToolError(["iptables", "-t", "nat", "-X", chain], deleted);
  }
  return removed || flushed.code === 0;
}

/** The arguments of an `iptables -S` rule line, with its double-quoted words (comments) kept whole. */
export function ruleSpec(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m !== null; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]!);
  return out;
}

/** The filter chain where the firewall plugin (iptables backend) accepts each container's traffic. */
export const FIREWALL_CHAIN = "CNI-FORWARD";

/** The firewall plugin's per-address rules in CNI-FORWARD (plugins/meta/firewall getPrivChainRules). */
export function firewallRules(ip: string): string[][] {
  const addr = `${ip}/32`;
  return [
    ["-d", addr, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ["-s", addr, "-j", "ACCEPT"],
  ];
}

const FIREWALL_RULE_RE = new RegExp(
  `^-A ${FIREWALL_CHAIN} (?:-d (\\d+\\.\\d+\\.\\d+\\.\\d+)/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT|-s (\\d+\\.\\d+\\.\\d+\\.\\d+)/32 -j ACCEPT)$`,
);

/** IPv4 addresses that have a firewall-plugin rule in CNI-FORWARD ([] when the chain does not exist). */
export async function firewallRuleAddresses(): Promise<string[]> {
  // The whole table: `-S <chain>` of a missing chain is an error worded differently by
  // iptables-legacy and iptables-nft.
  const r = await runTool("iptables", ["-w", "5", "-t", "filter", "-S"]);
  if (r.code !== 0) throw new HostToolError(["iptables", "-t", "filter", "-S"], r);
  const out = new Set<string>();
  for (const line of r.stdout.split("\n")) {
    const m = FIREWALL_RULE_RE.exec(line.trim());
    if (m !== null) out.add((m[1] ?? m[2])!);
  }
  return [...out];
}

/**
 * Removes the firewall plugin's rules for one address from CNI-FORWARD (the chain itself and
 * its jump from FORWARD stay: they are shared by every network using the plugin). The
 * plugin removes them itself on DEL only when it is given the cached ADD result; a container
 * whose cache entry was lost keeps them. True when anything was removed.
 */
export async function removeFirewallRules(ip: string): Promise<boolean> {
  let removed = false;
  for (const rule of firewallRules(ip)) {
    for (let i = 0; i < 16; i++) {
      const r = await runTool("iptables", ["-w", "5", "-t", "filter", "-D", FIREWALL_CHAIN, ...rule]);
      if (r.code === 0) {
        removed = true;
        continue;
      }
      if (/does not exist|No chain\/target\/match|Bad rule|doesn't exist/i.test(r.stderr)) break;
      throw new HostToolError(["iptables", "-t", "filter", "-D", FIREWALL_CHAIN, ...rule], r);
    }
  }
  return removed;
}

const FIREWALL_ADMIN_CHAIN = "CNI-ADMIN";

/**
 * Removes the firewall plugin's shared chains (CNI-FORWARD, CNI-ADMIN and the jump to them
 * from FORWARD) when they hold no rule of any container or administrator: the uninstall of
 * what the plugin set up. True when they were removed; false when they are absent or in use.
 */
export async function removeFirewallChainsIfUnused(): Promise<boolean> {
  const r = await runTool("iptables", ["-w", "5", "-t", "filter", "-S"]);
  if (r.code !== 0) throw new HostToolError(["iptables", "-t", "filter", "-S"], r);
  const lines = r.stdout.split("\n").map((l) => l.trim());
  if (!lines.includes(`-N ${FIREWALL_CHAIN}`)) return false;
  const inChain = (chain: string) => lines.filter((l) => l.startsWith(`-A ${chain} `));
  const forward = inChain(FIREWALL_CHAIN);
  const onlyAdminJump = forward.every((l) => l.endsWith(`-j ${FIREWALL_ADMIN_CHAIN}`));
  if (!onlyAdminJump || inChain(FIREWALL_ADMIN_CHAIN).length > 0) return false;
  // Other chains jumping to ours (besides FORWARD's jump) mean someone else relies on them.
  const jumps = lines.filter((l) => l.startsWith("-A ") && !l.startsWith(`-A ${FIREWALL_CHAIN} `) && l.endsWith(`-j ${FIREWALL_CHAIN}`));
  if (jumps.some((l) => !l.startsWith("-A FORWARD "))) return false;
  for (const jump of jumps) {
    const rule = jump.slice("-A FORWARD ".length);
    await mustRun("iptables", ["-w", "5", "-t", "filter", "-D", "FORWARD", ...splitRule(rule)]);
  }
  await mustRun("iptables", ["-w", "5", "-t", "filter", "-F", FIREWALL_CHAIN]);
  await mustRun("iptables", ["-w", "5", "-t", "filter", "-X", FIREWALL_CHAIN]);
  if (lines.includes(`-N ${FIREWALL_ADMIN_CHAIN}`)) await mustRun("iptables", ["-w", "5", "-t", "filter", "-X", FIREWALL_ADMIN_CHAIN]);
  return true;
}

/** Splits an `iptables -S` rule into arguments (double-quoted words, e.g. comments, kept whole). */
function splitRule(rule: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(rule); m !== null; m = re.exec(rule)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]!);
  return out;
}

/**
 * Container ids that have an ipMasq rule of network `networkName` in nat POSTROUTING (the
 * bridge plugin comments each with `name: "<network>" id: "<container>"`).
 */
export async function ipMasqContainerIds(networkName: string): Promise<string[]> {
  const r = await runTool("iptables", ["-w", "5", "-t", "nat", "-S", "POSTROUTING"]);
  if (r.code !== 0) throw new HostToolError(["iptables", "-t", "nat", "-S", "POSTROUTING"], r);
  const ids = new Set<string>();
  const re = /--comment "name: \\"([^"\\]+)\\" id: \\"([^"\\]+)\\""/;
  for (const line of r.stdout.split("\n")) {
    const m = re.exec(line);
    if (m !== null && m[1] === networkName) ids.add(m[2]!);
  }
  return [...ids].sort();
}
