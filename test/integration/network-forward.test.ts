// Forwarded traffic under `iptables -P FORWARD DROP` (every host with Docker): the default
// network's firewall plugin must accept the workspace's traffic, and DEL and our recovery
// paths must take its per-container rules away again. And the guards: a workspace cannot
// open connections to the host itself (DNS excepted) nor reach link-local addresses (cloud
// metadata) through it, unless their switches are off.
//
// Nothing here touches the machine's own network namespace: a private netns plays the host
// (FORWARD DROP is set there), a second one plays the outside world, joined to it by a veth
// pair; each container is a plain `ip netns add` namespace. WorkspaceNetwork runs in a child
// process inside the host netns (env/network-op.ts) with its own bridge, subnet, conf, cache
// and IPAM dirs. All addresses are random blocks of 10.215.0.0/16, plus one /30 of
// 169.254.0.0/16 (never 169.254.169.0/24), that this file creates in those namespaces; the
// only traffic is from a container netns to listeners this file starts in the outside and
// host netns (and from the host netns to a container's).
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runTool, type ToolResult } from "../../host/network/links.js";
import { guardChainNames } from "../../host/network/guards.js";
import type { NetworkOpReply, NetworkOpRequest } from "./env/network-op.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NETWORK_OP = path.join(REPO, "test/integration/env/network-op.ts");
const PLUGIN_DIR = "/usr/lib/cni";
const PORT = 18_000 + randomInt(0, 1000);
/** A service of the host netns listening on 0.0.0.0, as sshd or a registry would. */
const HOST_PORT = PORT + 1000;

const tag = randomBytes(3).toString("hex");
const hostNs = `mf-h-${tag}`;
const outNs = `mf-o-${tag}`;
const createdNs: string[] = [];
let tmp = "";
const listeners: ChildProcess[] = [];

// Distinct third octets in 10.215.0.0/16: one /30 for the host–outside link, one /24 per network.
const octets = new Set<number>();
while (octets.size < 6) octets.add(randomInt(0, 256));
const [linkOctet, ...netOctets] = [...octets] as [number, number, number, number, number, number];
const hostSideIp = `10.215.${linkOctet}.1`;
const outsideIp = `10.215.${linkOctet}.2`;
// A link-local address in the outside netns: what a metadata service looks like to the host.
const llOctet = [randomInt(1, 169), randomInt(170, 254)][randomInt(0, 2)]!;
const hostSideLinkLocal = `169.254.${llOctet}.1`;
const outsideLinkLocal = `169.254.${llOctet}.2`;

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await runTool(cmd, args);
  assert.equal(r.code, 0, `${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

function inHost(args: string[]): Promise<ToolResult> {
  return runTool("ip", ["netns", "exec", hostNs, ...args]);
}

async function addNetns(name: string): Promise<string> {
  await must("ip", ["netns", "add", name]);
  createdNs.push(name);
  return `/run/netns/${name}`;
}

/** One WorkspaceNetwork operation inside the host netns. */
async function networkOp(req: NetworkOpRequest): Promise<NetworkOpReply> {
  const r = await runTool(
    "ip",
    ["netns", "exec", hostNs, process.execPath, "--import", "tsx", NETWORK_OP, JSON.stringify(req)],
    60_000,
  );
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line) as NetworkOpReply;
  } catch {
    throw new Error(`network-op ${req.op} printed no reply (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

async function mustOp<T>(req: NetworkOpRequest): Promise<T> {
  const reply = await networkOp(req);
  if (!reply.ok) assert.fail(`${req.op} ${req.containerId ?? ""} failed: ${reply.error}`);
  return reply.value as T;
}

interface TestNet {
  base: Omit<NetworkOpRequest, "op">;
  prefix: string;
  dir: string;
}

function makeNet(octet: number, firewall: boolean): TestNet {
  const dir = fs.mkdtempSync(path.join(tmp, "net-"));
  return {
    base: { dir, bridge: `mfb${randomBytes(4).toString("hex")}`, subnet: `10.215.${octet}.0/24`, firewall },
    prefix: `10.215.${octet}.`,
    dir,
  };
}

interface Setup {
  ip: string;
  gateway?: string;
  plugins: string[];
}

/** Starts a TCP server in `ns` that answers "pong" on each of `ports` of `host`; killed in after(). */
async function listenIn(ns: string, host: string, ports: number[]): Promise<ChildProcess> {
  const script =
    `const net=require("net");let n=0;for(const p of ${JSON.stringify(ports)})` +
    `net.createServer(s=>s.end("pong")).listen(p,${JSON.stringify(host)},()=>{if(++n===${ports.length})console.log("ready")});`;
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
  listeners.push(child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the listener in ${ns} did not start`)), 10_000);
    child.stdout!.on("data", (d: Buffer) => {
      if (String(d).includes("ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the listener in ${ns} exited ${code}`));
    });
  });
  return child;
}

async function stopListener(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill();
  await exited;
}

/** A TCP connect from the container netns to a listener (the outside one by default): "connected", "timeout" or "error". */
async function tcpFrom(ns: string, ip = outsideIp, port = PORT): Promise<string> {
  const script =
    `const s=require("net").connect(${port},${JSON.stringify(ip)});s.setTimeout(1500);` +
    `s.on("data",d=>{if(String(d)==="pong")process.exit(0)});s.on("timeout",()=>process.exit(2));s.on("error",()=>process.exit(3));`;
  const r = await runTool("ip", ["netns", "exec", ns, process.execPath, "-e", script], 15_000);
  const outcome = ({ 0: "connected", 2: "timeout", 3: "error" } as Record<number, string>)[r.code];
  assert.ok(outcome !== undefined, `TCP probe failed to run (${r.code}): ${r.stderr}`);
  return outcome;
}

/** One ICMP echo from the container netns to the outside netns. */
async function pingFrom(ns: string): Promise<boolean> {
  const r = await runTool("ip", ["netns", "exec", ns, "busybox", "ping", "-c", "1", "-W", "1", outsideIp], 10_000);
  return r.code === 0;
}

/** The host netns's rules (iptables -S) of one table. */
async function hostRules(table: "filter" | "nat"): Promise<string> {
  const r = await inHost(["iptables", "-w", "5", "-t", table, "-S"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

function rulesFor(rules: string, ip: string): string[] {
  return rules.split("\n").filter((l) => l.includes(`${ip}/32`));
}

async function assertNoContainerRules(ip: string, containerId: string): Promise<void> {
  const filter = await hostRules("filter");
  assert.deepEqual(rulesFor(filter, ip), [], `filter rules for ${ip} left behind:\n${filter}`);
  const nat = await hostRules("nat");
  assert.deepEqual(rulesFor(nat, ip), [], `nat rules for ${ip} left behind:\n${nat}`);
  assert.ok(!nat.includes(containerId), `nat rules for ${containerId} left behind:\n${nat}`);
}

interface GuardReport {
  errors: string[];
  guardsChanged?: boolean;
}

/** The jump to our guard chain from INPUT or FORWARD, as `iptables -S` prints it. */
function guardJump(parent: "INPUT" | "FORWARD", bridge: string, chain: string): string {
  return `-A ${parent} -i ${bridge} -m comment --comment "memoh-cni:memoh-cni ${parent === "INPUT" ? "host" : "metadata"}" -j ${chain}`;
}

/** The same jump as iptables arguments (after -D or -A). */
function guardJumpArgs(parent: "INPUT" | "FORWARD", bridge: string, chain: string): string[] {
  return [parent, "-i", bridge, "-m", "comment", "--comment", `memoh-cni:memoh-cni ${parent === "INPUT" ? "host" : "metadata"}`, "-j", chain];
}

/** After a teardown: no chain of ours and no jump to one is left for this bridge. */
async function assertNoGuards(bridge: string): Promise<void> {
  const names = guardChainNames("memoh-cni", bridge);
  const filter = await hostRules("filter");
  for (const chain of [names.input, names.forward]) assert.ok(!filter.includes(chain), `${chain} left behind:\n${filter}`);
  assert.ok(!filter.includes(`-i ${bridge} `), `rules for ${bridge} left behind:\n${filter}`);
}

before(async () => {
  const missing: string[] = [];
  for (const [cmd, args] of [
    ["ip", ["-V"]],
    ["iptables", ["-V"]],
    ["busybox", ["true"]],
  ] as const) {
    const r = await runTool(cmd, [...args]).catch(() => undefined);
    if (r === undefined || r.code !== 0) missing.push(cmd);
  }
  for (const plugin of ["bridge", "host-local", "portmap", "firewall"]) {
    if (!fs.existsSync(path.join(PLUGIN_DIR, plugin))) missing.push(`${PLUGIN_DIR}/${plugin}`);
  }
  if (missing.length > 0) {
    throw new Error(`network-forward tests need ${missing.join(", ")} (apt-get install iproute2 iptables busybox-static containernetworking-plugins)`);
  }
  if (process.getuid?.() !== 0) throw new Error("network-forward tests must run as root (they create network namespaces)");

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-netfwd-"));
  await addNetns(hostNs);
  await addNetns(outNs);
  const vh = `mfv${tag}h`;
  const vo = `mfv${tag}o`;
  // Created inside the host netns and moved straight into the outside one: never in ours.
  await must("ip", ["-n", hostNs, "link", "add", vh, "type", "veth", "peer", "name", vo, "netns", outNs]);
  await must("ip", ["-n", hostNs, "addr", "add", `${hostSideIp}/30`, "dev", vh]);
  await must("ip", ["-n", outNs, "addr", "add", `${outsideIp}/30`, "dev", vo]);
  await must("ip", ["-n", hostNs, "addr", "add", `${hostSideLinkLocal}/30`, "dev", vh]);
  await must("ip", ["-n", outNs, "addr", "add", `${outsideLinkLocal}/30`, "dev", vo]);
  for (const [ns, dev] of [[hostNs, vh], [hostNs, "lo"], [outNs, vo], [outNs, "lo"]] as const) {
    await must("ip", ["-n", ns, "link", "set", dev, "up"]);
  }
  // The outside world has no route back into the container subnets: replies find their way
  // only because the host netns masquerades (the bridge plugin's ipMasq), as on a real host.
  const policy = await inHost(["iptables", "-w", "5", "-P", "FORWARD", "DROP"]);
  assert.equal(policy.code, 0, `iptables -P FORWARD DROP in ${hostNs}: ${policy.stderr}`);

  // The outside answers on every address it has (its link-local one too); the host netns
  // runs a service on all its addresses and a DNS port (TCP 53 stands for both protocols).
  await listenIn(outNs, "0.0.0.0", [PORT]);
  await listenIn(hostNs, "0.0.0.0", [HOST_PORT, 53]);
});

after(async () => {
  for (const child of listeners) await stopListener(child);
  // Deleting a netns takes its links, bridge, and iptables rules with it.
  const failures: string[] = [];
  for (const ns of createdNs.reverse()) {
    const r = await runTool("ip", ["netns", "del", ns]);
    if (r.code !== 0 && !/No such file/.test(r.stderr)) failures.push(`${ns}: ${r.stderr.trim()}`);
  }
  if (tmp !== "") fs.rmSync(tmp, { recursive: true, force: true });
  const left = await runTool("ip", ["netns", "list"]);
  assert.doesNotMatch(left.stdout, new RegExp(`mf-[hoc]-${tag}`), "test namespaces left behind");
  assert.deepEqual(failures, []);
});

describe("forwarded traffic of workspaces under FORWARD DROP", { concurrency: false }, () => {
  test("with the default firewall plugin the container reaches the outside; CHECK sees its rules; DEL removes them", async () => {
    const tn = makeNet(netOctets[0], true);
    const id = `fw-${tag}`;
    const netns = await addNetns(`mf-c-${tag}-1`);
    const a = await mustOp<Setup>({ ...tn.base, op: "setup", containerId: id, netns });
    assert.deepEqual(a.plugins, ["bridge", "portmap", "firewall"]);
    assert.ok(a.ip.startsWith(tn.prefix), `${a.ip} is not in ${tn.base.subnet}`);
    assert.match(await hostRules("filter"), /^-P FORWARD DROP$/m);
    const filter = await hostRules("filter");
    assert.match(filter, /^-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD$/m);
    assert.deepEqual(rulesFor(filter, a.ip).sort(), [
      `-A CNI-FORWARD -d ${a.ip}/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      `-A CNI-FORWARD -s ${a.ip}/32 -j ACCEPT`,
    ]);

    assert.equal(await tcpFrom(`mf-c-${tag}-1`), "connected");
    assert.equal(await pingFrom(`mf-c-${tag}-1`), true);

    await mustOp({ ...tn.base, op: "check", containerId: id, netns });
    // CHECK notices when the rule that lets the container out is gone.
    assert.equal((await inHost(["iptables", "-w", "5", "-D", "CNI-FORWARD", "-s", `${a.ip}/32`, "-j", "ACCEPT"])).code, 0);
    const broken = await networkOp({ ...tn.base, op: "check", containerId: id, netns });
    assert.ok(!broken.ok && /firewall/.test(broken.error) && /expected rule/.test(broken.error), JSON.stringify(broken));
    assert.equal(await tcpFrom(`mf-c-${tag}-1`), "timeout");

    await mustOp({ ...tn.base, op: "remove", containerId: id, netns });
    await assertNoContainerRules(a.ip, id);
    await mustOp({ ...tn.base, op: "remove", containerId: id, netns });
  });

  test("control: with firewall off the same traffic is dropped, and passes once FORWARD accepts", async () => {
    const tn = makeNet(netOctets[1], false);
    const id = `nofw-${tag}`;
    const ns = `mf-c-${tag}-2`;
    const netns = await addNetns(ns);
    const a = await mustOp<Setup>({ ...tn.base, op: "setup", containerId: id, netns });
    assert.deepEqual(a.plugins, ["bridge", "portmap"]);
    assert.deepEqual(rulesFor(await hostRules("filter"), a.ip), []);
    assert.equal(await tcpFrom(ns), "timeout");
    assert.equal(await pingFrom(ns), false);
    // The path itself works: only the FORWARD policy stood in the way.
    assert.equal((await inHost(["iptables", "-w", "5", "-P", "FORWARD", "ACCEPT"])).code, 0);
    try {
      assert.equal(await tcpFrom(ns), "connected");
    } finally {
      assert.equal((await inHost(["iptables", "-w", "5", "-P", "FORWARD", "DROP"])).code, 0);
    }
    await mustOp({ ...tn.base, op: "remove", containerId: id, netns });
    await assertNoContainerRules(a.ip, id);
  });

  test("recoveries remove the rules: DEL after the netns is gone, hygiene after the cache (and the lease) were lost", async () => {
    const tn = makeNet(netOctets[2], true);
    const ws = async (n: number): Promise<{ id: string; ns: string; netns: string; ip: string }> => {
      const id = `rec${n}-${tag}`;
      const ns = `mf-c-${tag}-r${n}`;
      const netns = await addNetns(ns);
      const { ip } = await mustOp<Setup>({ ...tn.base, op: "setup", containerId: id, netns });
      assert.equal(rulesFor(await hostRules("filter"), ip).length, 2, `no firewall rules for ${ip}`);
      return { id, ns, netns, ip };
    };
    const [gone, cacheLost, allLost, live] = [await ws(1), await ws(2), await ws(3), await ws(4)];

    // DEL after the container's netns went away.
    await must("ip", ["netns", "del", gone.ns]);
    await mustOp({ ...tn.base, op: "remove", containerId: gone.id, netns: gone.netns });
    await assertNoContainerRules(gone.ip, gone.id);

    // A crash that also lost the cached ADD result: DEL cannot tell the plugin the address.
    await must("ip", ["netns", "del", cacheLost.ns]);
    fs.rmSync(path.join(tn.dir, "cache", "results", `memoh-cni-${cacheLost.id}-eth0`));
    // …and one that lost its lease too: only the rules themselves are left.
    await must("ip", ["netns", "del", allLost.ns]);
    fs.rmSync(path.join(tn.dir, "cache", "results", `memoh-cni-${allLost.id}-eth0`));
    fs.rmSync(path.join(tn.dir, "ipam", "memoh-cni", allLost.ip));

    const report = await mustOp<{ released: string[]; errors: string[]; firewallRulesRemoved?: string[] }>({
      ...tn.base,
      op: "hygiene",
      live: [live.id],
    });
    assert.deepEqual(report.errors, []);
    assert.deepEqual(report.released, [cacheLost.id]);
    assert.deepEqual(report.firewallRulesRemoved, [allLost.ip]);
    await assertNoContainerRules(cacheLost.ip, cacheLost.id);
    // (Only its filter rules: nothing names allLost any more, so its ipMasq chain in nat stays.)
    assert.deepEqual(rulesFor(await hostRules("filter"), allLost.ip), []);

    // The live container kept its rules and its way out.
    assert.equal(rulesFor(await hostRules("filter"), live.ip).length, 2);
    assert.equal(await tcpFrom(live.ns), "connected");
    await mustOp({ ...tn.base, op: "remove", containerId: live.id, netns: live.netns });
    await assertNoContainerRules(live.ip, live.id);
  });

  test("a workspace cannot open connections to the host (a service on 0.0.0.0, through the gateway or another host address); DNS, the host's own connections and the outside still pass; off restores access", async () => {
    const tn = makeNet(netOctets[3], true);
    const names = guardChainNames("memoh-cni", tn.base.bridge);
    const id = `guard-${tag}`;
    const ns = `mf-c-${tag}-g`;
    const netns = await addNetns(ns);
    const a = await mustOp<Setup>({ ...tn.base, op: "setup", containerId: id, netns });
    const gateway = a.gateway!;
    assert.equal(gateway, `${tn.prefix}1`);

    assert.equal(await tcpFrom(ns, gateway, HOST_PORT), "timeout");
    assert.equal(await tcpFrom(ns, hostSideIp, HOST_PORT), "timeout");
    assert.equal(await tcpFrom(ns, hostSideLinkLocal, HOST_PORT), "timeout");
    assert.equal(await tcpFrom(ns, gateway, 53), "connected", "DNS to the host");
    assert.equal(await tcpFrom(ns), "connected", "the outside");
    // Connections the host opens to the workspace get their replies (ESTABLISHED in INPUT).
    const inContainer = await listenIn(ns, a.ip, [PORT]);
    assert.equal(await tcpFrom(hostNs, a.ip, PORT), "connected");
    await stopListener(inContainer);

    const filter = await hostRules("filter");
    assert.ok(filter.split("\n").includes(guardJump("INPUT", tn.base.bridge, names.input)), filter);
    for (const rule of [
      ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
      ["-p", "udp", "-m", "udp", "--dport", "53", "-j", "ACCEPT"],
      ["-p", "tcp", "-m", "tcp", "--dport", "53", "-j", "ACCEPT"],
      ["-j", "DROP"],
    ]) {
      assert.equal((await inHost(["iptables", "-w", "5", "-C", names.input, ...rule])).code, 0, `missing in ${names.input}: ${rule.join(" ")}`);
    }

    // The switch off: hygiene (as at a restart or reconcile) removes the guard; the host's service answers.
    const off = await mustOp<GuardReport>({ ...tn.base, blockHost: false, op: "hygiene", live: [id] });
    assert.deepEqual(off.errors, []);
    assert.equal(off.guardsChanged, true);
    assert.ok(!(await hostRules("filter")).includes(names.input));
    assert.equal(await tcpFrom(ns, gateway, HOST_PORT), "connected", "with the switch off the host is reachable");
    // On again, and the jump lost (a firewall reload): CHECK puts it back.
    const on = await mustOp<GuardReport>({ ...tn.base, op: "hygiene", live: [id] });
    assert.equal(on.guardsChanged, true);
    assert.equal((await inHost(["iptables", "-w", "5", "-D", ...guardJumpArgs("INPUT", tn.base.bridge, names.input)])).code, 0);
    assert.equal(await tcpFrom(ns, gateway, HOST_PORT), "connected");
    await mustOp({ ...tn.base, op: "check", containerId: id, netns });
    assert.equal(await tcpFrom(ns, gateway, HOST_PORT), "timeout");

    await mustOp({ ...tn.base, op: "remove", containerId: id, netns });
    await mustOp({ ...tn.base, op: "teardown" });
    await assertNoGuards(tn.base.bridge);
  });

  test("forwarded traffic to link-local addresses (cloud metadata) is dropped ahead of the firewall plugin's accepts; a routable outside address is not; off lets it through", async () => {
    const tn = makeNet(netOctets[4], true);
    const names = guardChainNames("memoh-cni", tn.base.bridge);
    const id = `meta-${tag}`;
    const ns = `mf-c-${tag}-m`;
    const netns = await addNetns(ns);
    const a = await mustOp<Setup>({ ...tn.base, op: "setup", containerId: id, netns });
    assert.equal(await tcpFrom(ns, outsideLinkLocal), "timeout");
    assert.equal(await tcpFrom(ns), "connected");
    assert.equal((await inHost(["iptables", "-w", "5", "-C", names.forward, "-d", "169.254.0.0/16", "-j", "DROP"])).code, 0);
    const forwardOrder = async () => {
      const lines = (await hostRules("filter")).split("\n").filter((l) => l.startsWith("-A FORWARD "));
      return { ours: lines.indexOf(guardJump("FORWARD", tn.base.bridge, names.forward)), plugin: lines.findIndex((l) => l.endsWith("-j CNI-FORWARD")) };
    };
    let order = await forwardOrder();
    assert.ok(order.ours !== -1 && order.plugin !== -1 && order.ours < order.plugin, JSON.stringify(order));
    assert.ok((await hostRules("filter")).includes(`-A CNI-FORWARD -s ${a.ip}/32 -j ACCEPT`));

    // Our jump behind the plugin's (as after the plugin's first ADD): CHECK moves it in front again.
    const jumpArgs = guardJumpArgs("FORWARD", tn.base.bridge, names.forward);
    assert.equal((await inHost(["iptables", "-w", "5", "-D", ...jumpArgs])).code, 0);
    assert.equal((await inHost(["iptables", "-w", "5", "-A", ...jumpArgs])).code, 0);
    assert.equal(await tcpFrom(ns, outsideLinkLocal), "connected", "behind the plugin's accept the guard does nothing");
    await mustOp({ ...tn.base, op: "check", containerId: id, netns });
    order = await forwardOrder();
    assert.ok(order.ours < order.plugin, JSON.stringify(order));
    assert.equal(await tcpFrom(ns, outsideLinkLocal), "timeout");

    // The switch off (control): the same address answers.
    const off = await mustOp<GuardReport>({ ...tn.base, blockMetadata: false, op: "hygiene", live: [id] });
    assert.deepEqual(off.errors, []);
    assert.ok(!(await hostRules("filter")).includes(names.forward));
    assert.equal(await tcpFrom(ns, outsideLinkLocal), "connected", "with the switch off link-local is reachable");
    await mustOp({ ...tn.base, op: "hygiene", live: [id] });
    assert.equal(await tcpFrom(ns, outsideLinkLocal), "timeout");

    await mustOp({ ...tn.base, op: "remove", containerId: id, netns });
    await assertNoContainerRules(a.ip, id);
    await mustOp({ ...tn.base, op: "teardown" });
    await assertNoGuards(tn.base.bridge);
  });
});
