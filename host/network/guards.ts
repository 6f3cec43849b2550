// The filter rules this project owns around its workspaces' traffic ("guards"): what a
// workspace may open to the host itself (INPUT) and where its forwarded traffic may not go
// (link-local, i.e. cloud metadata). Each guard is a chain of ours jumped to from the
// built-in chain for one bridge, created idempotently and removed with the network.
import { createHash } from "node:crypto";
import { HostToolError, ruleSpec, runTool } from "./links.js";

async function mustRun(cmd: string, args: string[]): Promise<string> {
  const r = await runTool(cmd, args);
  if (r.code !== 0) throw new HostToolError([cmd, ...args], r);
  return r.stdout;
}

/**
 * The filter chains this project owns for one network ("guards"): one jumped to from INPUT
 * for what workspaces send to the host itself, one jumped to from FORWARD for what they send
 * through it. Named by a hash of the network and bridge so several networks (and test runs)
 * on one host never share a chain; at most 28 characters, iptables' limit.
 */
export function guardChainNames(networkName: string, bridge: string): { input: string; forward: string } {
  const hash = createHash("sha256").update(`${networkName}/${bridge}`).digest("hex").slice(0, 16);
  return { input: `MEMOH-IN-${hash}`, forward: `MEMOH-FWD-${hash}` };
}

/** Link-local IPv4: cloud metadata services (169.254.169.254 and neighbours) live here. */
export const LINK_LOCAL_V4 = "169.254.0.0/16";

/**
 * The INPUT guard: replies to what the host opened (the host talks to agents; portmap's
 * local DNAT), DNS to the host (the resolv.conf workspaces get names the host's own
 * non-loopback nameservers, which can be an address of this host running a resolver),
 * nothing else.
 */
export function hostGuardRules(chain: string): string[][] {
  return [
    ["-A", chain, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ["-A", chain, "-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"],
    ["-A", chain, "-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "ACCEPT"],
    ["-A", chain, "-j", "DROP"],
  ];
}

/** The FORWARD guard: nothing a workspace sends is routed to link-local addresses. */
export function metadataGuardRules(chain: string): string[][] {
  return [["-A", chain, "-d", LINK_LOCAL_V4, "-j", "DROP"]];
}

export interface GuardSpec {
  /** Our chain (filter table). */
  chain: string;
  /** The built-in chain that jumps to it: INPUT or FORWARD. */
  parent: "INPUT" | "FORWARD";
  /** The bridge whose incoming traffic is guarded. */
  bridge: string;
  comment: string;
  /** Its rules in order, as `-A <chain> …` argument lists; the last one is a `-j DROP`. */
  rules: string[][];
  /** A chain whose jump in `parent` must come after ours (the firewall plugin's accepts). */
  before?: string;
}

const ALREADY_EXISTS = /already exists/i;
const NOT_THERE = /does not exist|No chain\/target\/match|Bad rule|doesn't exist|No such file/i;

function jumpRule(g: GuardSpec): string[] {
  return ["-i", g.bridge, "-m", "comment", "--comment", g.comment, "-j", g.chain];
}

async function deleteEvery(table: string, chain: string, rule: string[]): Promise<boolean> {
  let removed = false;
  for (let i = 0; i < 16; i++) {
    const r = await runTool("iptables", ["-w", "5", "-t", table, "-D", chain, ...rule]);
    if (r.code === 0) {
      removed = true;
      continue;
    }
    if (NOT_THERE.test(r.stderr)) return removed;
    throw new HostToolError(["iptables", "-t", table, "-D", chain, ...rule], r);
  }
  return removed;
}

/**
 * Makes a guard exist as specified: the chain, exactly its rules (rewritten when anything
 * differs: a rule missing, one added by hand, the DROP not last), and one jump to it from
 * the parent chain at the top (ahead of `before`'s jump, which the firewall plugin inserts at
 * the top on its first ADD). Idempotent; true when anything had to change. Callers
 * serialize calls for the same guard.
 */
export async function ensureGuard(g: GuardSpec): Promise<boolean> {
  let changed = false;
  const created = await runTool("iptables", ["-w", "5", "-t", "filter", "-N", g.chain]);
  if (created.code === 0) changed = true;
  else if (!ALREADY_EXISTS.test(created.stderr)) throw new HostToolError(["iptables", "-t", "filter", "-N", g.chain], created);

  const listed = await mustRun("iptables", ["-w", "5", "-t", "filter", "-S", g.chain]);
  const lines = listed.split("\n").map((l) => l.trim()).filter((l) => l.startsWith(`-A ${g.chain} `));
  let intact = lines.length === g.rules.length && (lines.at(-1) ?? "").endsWith("-j DROP");
  for (const rule of intact ? g.rules : []) {
    const check = await runTool("iptables", ["-w", "5", "-t", "filter", "-C", ...rule.slice(1)]);
    if (check.code !== 0) {
      intact = false;
      break;
    }
  }
  if (!intact) {
    await mustRun("iptables", ["-w", "5", "-t", "filter", "-F", g.chain]);
    for (const rule of g.rules) await mustRun("iptables", ["-w", "5", "-t", "filter", ...rule]);
    changed = true;
  }

  const parent = (await mustRun("iptables", ["-w", "5", "-t", "filter", "-S", g.parent])).split("\n").map((l) => l.trim()).filter((l) => l.startsWith(`-A ${g.parent} `));
  const ours = parent.findIndex((l) => l.split(/\s+/).at(-1) === g.chain && l.includes(`-i ${g.bridge} `));
  const theirs = g.before === undefined ? -1 : parent.findIndex((l) => l.endsWith(`-j ${g.before}`));
  if (ours === -1 || (theirs !== -1 && theirs < ours)) {
    // Removed, then inserted at the top: a rule cannot be moved, and deleting a copy by its
    // line number could hit another rule when someone else changes the chain meanwhile.
    if (ours !== -1) await deleteEvery("filter", g.parent, jumpRule(g));
    await mustRun("iptables", ["-w", "5", "-t", "filter", "-I", g.parent, "1", ...jumpRule(g)]);
    changed = true;
  }
  return changed;
}

/** Whether the guard's chain holds its rules and its parent jumps to it (a read-only ensureGuard). */
export async function guardInPlace(g: GuardSpec): Promise<boolean> {
  if ((await runTool("iptables", ["-w", "5", "-t", "filter", "-C", g.parent, ...jumpRule(g)])).code !== 0) return false;
  for (const rule of g.rules) {
    if ((await runTool("iptables", ["-w", "5", "-t", "filter", "-C", ...rule.slice(1)])).code !== 0) return false;
  }
  return true;
}

/** Removes a guard: every jump to it from its parent, then the chain. True when anything was removed. */
export async function removeGuard(g: Pick<GuardSpec, "chain" | "parent">): Promise<boolean> {
  const listed = await runTool("iptables", ["-w", "5", "-t", "filter", "-S", g.parent]);
  if (listed.code !== 0) throw new HostToolError(["iptables", "-t", "filter", "-S", g.parent], listed);
  let removed = false;
  const jumps = listed.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.startsWith(`-A ${g.parent} `) && l.split(/\s+/).at(-1) === g.chain)
    .map((l) => ruleSpec(l.slice(`-A ${g.parent} `.length)));
  for (const spec of jumps) if (await deleteEvery("filter", g.parent, spec)) removed = true;
  const flushed = await runTool("iptables", ["-w", "5", "-t", "filter", "-F", g.chain]);
  if (flushed.code !== 0) {
    if (NOT_THERE.test(flushed.stderr)) return removed;
    throw new HostToolError(["iptables", "-t", "filter", "-F", g.chain], flushed);
  }
  const deleted = await runTool("iptables", ["-w", "5", "-t", "filter", "-X", g.chain]);
  if (deleted.code !== 0 && !NOT_THERE.test(deleted.stderr)) throw new HostToolError(["iptables", "-t", "filter", "-X", g.chain], deleted);
  return true;
}
