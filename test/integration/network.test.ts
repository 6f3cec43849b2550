// CNI networking with Debian's real plugins on the network namespaces of real containers
// under a private containerd. Every test has its own bridge (mtb<hex>), its own /24 (or /30)
// in 10.213.0.0/16, its own conf/cache/IPAM dirs, and removes all of it afterwards.
// Traffic goes only to 127.0.0.1 (containerd) and to the test's own container IPs.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomInt } from "node:crypto";
import fs from "node:fs";
import { connect } from "node:net";
import os from "node:os";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";
import { WorkspaceNetwork, type NetworkAttachment } from "../../host/network/network.js";
import { NetworkSetupError } from "../../host/network/errors.js";
import { guardChainNames } from "../../host/network/guards.js";
import { bridgePorts, deleteLink, getLink, isPortIsolated, runTool } from "../../host/network/links.js";
import { listTasks, startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { buildTestImages, importTestImages } from "./env/images.js";
import { requireRuntimeBundle, runContainer, type RunningContainer } from "./env/container.js";

let env: ContainerdEnv;
let busybox: string;
// Distinct third octets for the tests of this run.
let nextOctet = randomInt(0, 200);

before(async () => {
  requireRuntimeBundle();
  env = await startContainerd();
  busybox = (await importTestImages(env, await buildTestImages())).busybox;
});

after(async () => {
  await env?.stop();
});

interface TestNet {
  net: WorkspaceNetwork;
  bridge: string;
  subnet: string;
  prefix: string;
  dir: string;
  logs: string[];
  ipamDir: string;
  cacheDir: string;
  /** Starts a busybox container running the agent on 0.0.0.0:9090 (no network yet). */
  start(name: string): Promise<Workspace>;
  cleanup(): Promise<void>;
}

interface Workspace {
  container: RunningContainer;
  netns: string;
}

async function makeNet(t: { after: (fn: () => Promise<void>) => void }, options: { isolation?: boolean; prefixLength?: 24 | 30 } = {}): Promise<TestNet> {
  const octet = nextOctet++;
  const prefix = `10.213.${octet}`;
  const subnet = `${prefix}.0/${options.prefixLength ?? 24}`;
  const bridge = `mtb${randomBytes(4).toString("hex")}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-net-"));
  const ipamDir = path.join(dir, "ipam");
  const cacheDir = path.join(dir, "cache");
  const logs: string[] = [];
  const net = WorkspaceNetwork.open({
    confDir: path.join(dir, "conf"),
    cacheDir,
    defaults: { bridge, subnet, ipamDataDir: ipamDir },
    isolation: options.isolation ?? true,
    pluginTimeoutMs: 20_000,
    log: (m) => logs.push(m),
  });
  const started: Workspace[] = [];
  const tn: TestNet = {
    net,
    bridge,
    subnet,
    prefix,
    dir,
    logs,
    ipamDir,
    cacheDir,
    async start(name) {
      const id = `${name}-${randomBytes(3).toString("hex")}`;
      const container = await runContainer(env, { id, image: busybox, env: { BRIDGE_TCP_ADDR: "0.0.0.0:9090" } });
      const task = (await listTasks(env)).find((x) => x.id === id);
      assert.ok(task !== undefined && task.pid > 0, `no task for ${id}`);
      const ws = { container, netns: `/proc/${task.pid}/ns/net` };
      started.push(ws);
      return ws;
    },
    async cleanup() {
      for (const ws of started) {
        await net.removeNetwork(ws.container.id, ws.netns).catch(() => {});
        await ws.container.stop({ graceMs: 1000 }).catch(() => {});
      }
      await net.removeHostNetworking();
      await deleteLink(bridge);
      fs.rmSync(dir, { recursive: true, force: true });
      const nat = await runTool("iptables", ["-t", "nat", "-S"]);
      assert.doesNotMatch(nat.stdout, new RegExp(prefix.replace(/\./g, "\\.") + "\\."), "iptables nat rules for the test subnet left behind");
      const filter = await runTool("iptables", ["-t", "filter", "-S"]);
      assert.doesNotMatch(filter.stdout, new RegExp(prefix.replace(/\./g, "\\.") + "\\."), "firewall rules for the test subnet left behind");
      // Teardown removes the host/metadata guards of this bridge: chains and jumps.
      const guards = guardChainNames(net.list.name, bridge);
      for (const chain of [guards.input, guards.forward]) assert.ok(!filter.stdout.includes(chain), `guard chain ${chain} left behind`);
      assert.ok(!filter.stdout.includes(`-i ${bridge} `), `rules for ${bridge} left behind`);
      // The firewall plugin's shared chains go once no rule of anybody is left in them.
      if (!/-A CNI-(FORWARD|ADMIN) .*-j ACCEPT/.test(filter.stdout)) assert.doesNotMatch(filter.stdout, /-N CNI-FORWARD/, "CNI-FORWARD left behind");
      assert.equal(await getLink(bridge), undefined);
    },
  };
  t.after(() => tn.cleanup());
  return tn;
}

/** Host probes go only where the test's bridge routes them, never off this machine. */
async function assertOnTestBridge(ip: string): Promise<void> {
  const r = await runTool("ip", ["-o", "route", "get", ip]);
  assert.match(r.stdout, / dev mtb[0-9a-f]{8} /, `${ip} is not routed to a test bridge: ${r.stdout || r.stderr}`);
}

async function infoAt(ip: string): Promise<{ pid: number; listen: string }> {
  await assertOnTestBridge(ip);
  const client = new BridgeClient(`${ip}:9090`, { defaultTimeoutMs: 5_000 });
  try {
    await client.waitReady(5_000);
    return await client.info();
  } finally {
    client.close();
  }
}

/** A TCP connect from the host to ip:9090 with a short deadline; true when it was accepted. */
async function hostConnects(ip: string): Promise<boolean> {
  await assertOnTestBridge(ip);
  return new Promise((resolve) => {
    const s = connect(9090, ip);
    s.setTimeout(1000);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("timeout", () => {
      s.destroy();
      resolve(false);
    });
    s.once("error", () => resolve(false));
  });
}

/** A TCP connect from inside `from` to ip:9090; true when it was accepted. */
async function connectsFrom(from: Workspace, ip: string): Promise<boolean> {
  const script = `const s=require("net").connect(9090,${JSON.stringify(ip)});s.setTimeout(1500);` +
    `s.on("connect",()=>process.exit(0));s.on("timeout",()=>process.exit(2));s.on("error",()=>process.exit(3));`;
  const r = await from.container.exec(["/opt/memoh/bin/node", "-e", script], { timeoutMs: 10_000 });
  assert.ok([0, 2, 3].includes(r.code), `probe failed to run (${r.code}): ${r.stderr}`);
  return r.code === 0;
}

function leaseOwners(tn: TestNet): string[] {
  const dir = path.join(tn.ipamDir, "memoh-cni");
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((n) => n.startsWith("10."))
    .map((n) => fs.readFileSync(path.join(dir, n), "utf8").split(/\r?\n/)[0]!.trim())
    .sort();
}

function inSubnet(tn: TestNet, a: NetworkAttachment): void {
  assert.ok(a.ip.startsWith(`${tn.prefix}.`), `${a.ip} is not in ${tn.subnet}`);
}

describe("CNI networking of workspace containers", { concurrency: false }, () => {
  test("a container gets an IP on the subnet; its agent answers Info at <ip>:9090; DEL twice succeeds", async (t) => {
    const tn = await makeNet(t);
    const ws = await tn.start("one");
    const a = await tn.net.setupNetwork(ws.container.id, ws.netns);
    inSubnet(tn, a);
    assert.equal(a.gateway, `${tn.prefix}.1`);
    const info = await infoAt(a.ip);
    assert.match(info.listen, /9090/);
    assert.ok(a.hostInterface !== undefined && (await isPortIsolated(a.hostInterface)));
    await tn.net.checkNetwork(ws.container.id, ws.netns);
    const nat = await runTool("iptables", ["-t", "nat", "-S", "POSTROUTING"]);
    assert.match(nat.stdout, new RegExp(`-s ${tn.subnet.replace(/\./g, "\\.")} ! -d .*MASQUERADE`));
    assert.equal(fs.readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim(), "1");
    assert.deepEqual(leaseOwners(tn), [ws.container.id]);

    await tn.net.removeNetwork(ws.container.id, ws.netns);
    await tn.net.removeNetwork(ws.container.id, ws.netns);
    assert.deepEqual(await bridgePorts(tn.bridge), []);
    assert.deepEqual(leaseOwners(tn), []);
    assert.equal(tn.net.runner.cachedResult(ws.container.id), undefined);
    // The bridge (and so the subnet's route) is still there: the probe stays on this host.
    assert.ok((await getLink(tn.bridge)) !== undefined);
    assert.equal(await hostConnects(a.ip), false);
  });

  test("two containers: distinct IPs, the host reaches both, neither reaches the other", async (t) => {
    const tn = await makeNet(t);
    const [wa, wb] = await Promise.all([tn.start("iso-a"), tn.start("iso-b")]);
    const a = await tn.net.setupNetwork(wa.container.id, wa.netns);
    const b = await tn.net.setupNetwork(wb.container.id, wb.netns);
    inSubnet(tn, a);
    inSubnet(tn, b);
    assert.notEqual(a.ip, b.ip);
    assert.ok((await infoAt(a.ip)).pid > 0);
    assert.ok((await infoAt(b.ip)).pid > 0);
    assert.equal(await connectsFrom(wa, a.ip), true, "a container reaches its own agent");
    assert.equal(await connectsFrom(wa, b.ip), false, "a reached b");
    assert.equal(await connectsFrom(wb, a.ip), false, "b reached a");
  });

  test("with isolation off, containers on the bridge reach each other (control)", async (t) => {
    const tn = await makeNet(t, { isolation: false });
    const [wa, wb] = await Promise.all([tn.start("open-a"), tn.start("open-b")]);
    const a = await tn.net.setupNetwork(wa.container.id, wa.netns);
    const b = await tn.net.setupNetwork(wb.container.id, wb.netns);
    assert.equal(a.isolated, false);
    assert.equal(await connectsFrom(wa, b.ip), true);
    assert.equal(await connectsFrom(wb, a.ip), true);
  });

  test("a bridge that lost all its ports (zero MAC) is recovered by setup and by startup hygiene", async (t) => {
    const tn = await makeNet(t);
    const zeroMacBridge = async () => {
      const port = `${tn.bridge}p`;
      for (const args of [
        ["link", "add", tn.bridge, "type", "bridge"],
        ["link", "add", port, "type", "veth", "peer", "name", `${tn.bridge}q`],
        ["link", "set", port, "master", tn.bridge],
        ["link", "set", tn.bridge, "up"],
        ["link", "del", port],
      ]) {
        const r = await runTool("ip", args);
        assert.equal(r.code, 0, `ip ${args.join(" ")}: ${r.stderr}`);
      }
      assert.equal((await getLink(tn.bridge))?.address, "00:00:00:00:00:00");
    };

    await zeroMacBridge();
    const report = await tn.net.cleanupStale([]);
    assert.equal(report.bridgeDeleted, "zero-mac");
    assert.equal(await getLink(tn.bridge), undefined);

    await zeroMacBridge();
    tn.logs.length = 0;
    const ws = await tn.start("mac");
    const a = await tn.net.setupNetwork(ws.container.id, ws.netns);
    assert.ok((await infoAt(a.ip)).pid > 0);
    assert.notEqual((await getLink(tn.bridge))?.address, "00:00:00:00:00:00");
    // Where the kernel lets the plugin hit the known failure (this VM's 6.x does), the log
    // shows the recovery path ran; elsewhere setup must simply have succeeded first time.
    assert.ok(
      tn.logs.some((l) => /could not set bridge's mac/.test(l)) || tn.logs.length === 0,
      `unexpected recovery log: ${tn.logs.join("\n")}`,
    );
  });

  test("the bridge deleted under a running container: setup again restores reachability", async (t) => {
    const tn = await makeNet(t);
    const ws = await tn.start("restart");
    const first = await tn.net.setupNetwork(ws.container.id, ws.netns);
    assert.ok((await infoAt(first.ip)).pid > 0);
    assert.equal(await deleteLink(tn.bridge), true);
    // No probe now: without the bridge the subnet's route is gone and a connect would follow
    // the host's default route off this machine.
    assert.equal((await getLink(first.hostInterface!))?.master, undefined);
    const again = await tn.net.setupNetwork(ws.container.id, ws.netns);
    inSubnet(tn, again);
    assert.ok((await infoAt(again.ip)).pid > 0);
    await tn.net.checkNetwork(ws.container.id, ws.netns);
    assert.deepEqual(leaseOwners(tn), [ws.container.id]);
    assert.equal((await bridgePorts(tn.bridge)).length, 1);
  });

  test("a /30 runs out of addresses: a clear error, no leaked veth, lease or cache entry", async (t) => {
    const tn = await makeNet(t, { prefixLength: 30 });
    const [w1, w2] = await Promise.all([tn.start("full-1"), tn.start("full-2")]);
    const a = await tn.net.setupNetwork(w1.container.id, w1.netns);
    assert.equal(a.ip, `${tn.prefix}.2`);
    const portsBefore = await bridgePorts(tn.bridge);
    await assert.rejects(tn.net.setupNetwork(w2.container.id, w2.netns), (err: unknown) => {
      assert.ok(err instanceof NetworkSetupError, String(err));
      assert.match(err.message, /no IP addresses available/);
      assert.match(err.message, new RegExp(w2.container.id));
      return true;
    });
    assert.deepEqual(await bridgePorts(tn.bridge), portsBefore);
    assert.deepEqual(leaseOwners(tn), [w1.container.id]);
    assert.equal(tn.net.runner.cachedResult(w2.container.id), undefined);
    const ifaces = await w2.container.exec(["ip", "-o", "link"]);
    assert.doesNotMatch(ifaces.stdout, /eth0/);
    assert.ok((await infoAt(a.ip)).pid > 0, "the first container is still reachable");
  });

  test("startup hygiene releases the cache entry, lease and nat chain of a container that is gone, even one whose cache and lease were lost too", async (t) => {
    const tn = await makeNet(t);
    const [keep, gone, lost] = await Promise.all([tn.start("keep"), tn.start("gone"), tn.start("lost")]);
    const k = await tn.net.setupNetwork(keep.container.id, keep.netns);
    await tn.net.setupNetwork(gone.container.id, gone.netns);
    const l = await tn.net.setupNetwork(lost.container.id, lost.netns);
    // A crash: the containers go away without a DEL; of one, the cache entry and lease are lost too.
    await gone.container.stop({ graceMs: 500 });
    await lost.container.stop({ graceMs: 500 });
    fs.rmSync(tn.net.runner.cachePath(lost.container.id));
    fs.rmSync(path.join(tn.ipamDir, "memoh-cni", l.ip));
    const natBefore = await runTool("iptables", ["-t", "nat", "-S", "POSTROUTING"]);
    assert.match(natBefore.stdout, new RegExp(`id: \\\\"${lost.container.id}\\\\"`), natBefore.stdout);
    // A flushed guard (a firewall reload) is put back by the same hygiene.
    const guards = guardChainNames(tn.net.list.name, tn.bridge);
    assert.equal((await runTool("iptables", ["-w", "5", "-F", guards.input])).code, 0);
    const report = await tn.net.cleanupStale([keep.container.id]);
    assert.equal(report.guardsChanged, true);
    assert.equal((await runTool("iptables", ["-w", "5", "-C", guards.input, "-j", "DROP"])).code, 0);
    assert.deepEqual(report.released, [gone.container.id]);
    assert.deepEqual(report.ipMasqChainsRemoved, [lost.container.id]);
    const natAfter = await runTool("iptables", ["-t", "nat", "-S"]);
    assert.doesNotMatch(natAfter.stdout, new RegExp(`${lost.container.id}|${gone.container.id}|${l.ip.replace(/\./g, "\\.")}/32`), natAfter.stdout);
    assert.match(natAfter.stdout, new RegExp(`id: \\\\"${keep.container.id}\\\\"`), "the live container lost its masquerade rule");
    assert.deepEqual(report.errors, []);
    assert.equal(report.bridgeDeleted, undefined);
    assert.deepEqual(leaseOwners(tn), [keep.container.id]);
    assert.deepEqual(tn.net.runner.cachedContainerIds(), [keep.container.id]);
    assert.ok((await infoAt(k.ip)).pid > 0);
  });
});
