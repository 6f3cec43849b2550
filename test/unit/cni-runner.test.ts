// The CNI runner's logic with fake plugins: ADD chaining, DEL order and idempotence, the
// result cache, CHECK, the VERSION gate, and setupNetwork's retry and cleanup rules.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CniRunner } from "../../host/network/cni.js";
import { parseConfList, type NetworkConfigList } from "../../host/network/conflist.js";
import { CniError, CniErrorCode, NetworkSetupError } from "../../host/network/errors.js";
import { WorkspaceNetwork } from "../../host/network/network.js";
import { bridgeResult, makeFakeCni, type FakeCni } from "./helpers/fake-cni.js";

const NETNS = "/proc/self/ns/net";

function setup(t: { after: (fn: () => void) => void }, plugins: Array<Record<string, unknown>>, version = "1.0.0") {
  const types = [...new Set(plugins.map((p) => String(p.type)))];
  const f = makeFakeCni(types);
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-cni-cache-"));
  t.after(() => {
    f.remove();
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });
  const list = parseConfList(JSON.stringify({ cniVersion: version, name: "testnet", plugins }));
  const runner = new CniRunner(list, { pluginDirs: [f.binDir], cacheDir, env: f.env, timeoutMs: 5_000 });
  return { f, runner, list, cacheDir };
}

function withoutVersion(f: FakeCni) {
  return f.calls().filter((c) => c.command !== "VERSION");
}

test("ADD chains each plugin's result into the next; runtimeConfig only for declared capabilities", async (t) => {
  const { f, runner } = setup(t, [
    { type: "first", mtu: 1400 },
    { type: "second", capabilities: { portMappings: true, bandwidth: true } },
    { type: "third" },
  ]);
  const r1 = bridgeResult("10.99.0.2", NETNS);
  const r2 = { ...bridgeResult("10.99.0.2", NETNS), dns: { nameservers: ["10.99.0.1"] } };
  const r3 = { ...r2, extra: "kept" };
  f.answer("first", "ADD", r1);
  f.answer("second", "ADD", r2);
  f.answer("third", "ADD", r3);
  const portMappings = [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }];
  const result = await runner.add({ containerId: "c1", netns: NETNS, capabilityArgs: { portMappings, other: 1 } });
  assert.deepEqual(result.raw, r3);
  assert.deepEqual(result.dns, { nameservers: ["10.99.0.1"] });

  const calls = withoutVersion(f);
  assert.deepEqual(
    calls.map((c) => `${c.plugin} ${c.command}`),
    ["first ADD", "second ADD", "third ADD"],
  );
  assert.deepEqual(calls[0]?.stdin, { type: "first", mtu: 1400, name: "testnet", cniVersion: "1.0.0" });
  assert.deepEqual(calls[1]?.stdin.prevResult, r1);
  assert.deepEqual(calls[1]?.stdin.runtimeConfig, { portMappings });
  assert.deepEqual(calls[2]?.stdin.prevResult, r2);
  assert.equal(calls[2]?.stdin.runtimeConfig, undefined);
  assert.ok(calls.every((c) => c.env.CNI_CONTAINERID === "c1" && c.env.CNI_NETNS === NETNS && c.env.CNI_IFNAME === "eth0"));
  // The runner caches only when told to (after the caller's own steps succeed).
  assert.equal(runner.cachedResult("c1"), undefined);
});

test("the cached ADD result feeds DEL (reverse order) and CHECK; DEL twice is fine", async (t) => {
  const { f, runner, cacheDir } = setup(t, [{ type: "first" }, { type: "second", capabilities: { portMappings: true } }]);
  const r = bridgeResult("10.99.0.3", NETNS);
  f.answer("first", "ADD", r);
  f.answer("second", "ADD", r);
  const portMappings = [{ hostPort: 1, containerPort: 2, protocol: "tcp" }];
  const rt = { containerId: "c2", netns: NETNS, capabilityArgs: { portMappings } };
  const result = await runner.add(rt);
  runner.saveResult(rt, result);
  assert.ok(fs.existsSync(path.join(cacheDir, "results", "testnet-c2-eth0")));
  assert.deepEqual(runner.cachedResult("c2")?.result.raw, r);
  assert.deepEqual(runner.cachedContainerIds(), ["c2"]);

  await runner.check({ containerId: "c2", netns: NETNS });
  // DEL without capability args: the cached ones are used (portmap must find its rules).
  await runner.del({ containerId: "c2", netns: NETNS });
  await runner.del({ containerId: "c2", netns: NETNS });
  const calls = withoutVersion(f).slice(2);
  assert.deepEqual(
    calls.map((c) => `${c.plugin} ${c.command}`),
    ["first CHECK", "second CHECK", "second DEL", "first DEL", "second DEL", "first DEL"],
  );
  assert.deepEqual(calls[0]?.stdin.prevResult, r);
  assert.deepEqual(calls[2]?.stdin.prevResult, r);
  assert.deepEqual(calls[2]?.stdin.runtimeConfig, { portMappings });
  // The second DEL has no cache entry: no prevResult, and it still succeeds.
  assert.equal(calls[4]?.stdin.prevResult, undefined);
  assert.equal(runner.cachedResult("c2"), undefined);
  assert.deepEqual(runner.cachedContainerIds(), []);
  await assert.rejects(
    runner.check({ containerId: "c2", netns: NETNS }),
    (err: unknown) => err instanceof CniError && err.code === CniErrorCode.UNKNOWN_CONTAINER,
  );
});

test("DEL of a gone netns passes an empty CNI_NETNS; a failing plugin does not stop the others", async (t) => {
  const { f, runner } = setup(t, [{ type: "first" }, { type: "second" }]);
  f.answer("first", "ADD", bridgeResult("10.99.0.4", NETNS));
  f.answer("second", "ADD", bridgeResult("10.99.0.4", NETNS));
  const rt = { containerId: "c3", netns: NETNS };
  runner.saveResult(rt, await runner.add(rt));
  f.answer("second", "DEL", { code: 5, msg: "disk on fire" }, { code: 1 });
  await assert.rejects(runner.del({ containerId: "c3", netns: "/proc/999999999/ns/net" }), /second: disk on fire/);
  const dels = withoutVersion(f).filter((c) => c.command === "DEL");
  assert.deepEqual(dels.map((c) => c.plugin), ["second", "first"]);
  assert.ok(dels.every((c) => c.env.CNI_NETNS === ""));
  assert.ok(runner.cachedResult("c3") !== undefined, "the cache entry is kept for a retry");
  // The bridge plugin's ipMasq teardown after the chain vanished counts as done.
  f.answer("second", "DEL", { code: 999, msg: "running [iptables -D ...]: Chain 'CNI-abc' does not exist" }, { code: 1 });
  await runner.del({ containerId: "c3" });
  assert.equal(runner.cachedResult("c3"), undefined);
});

test("a plugin that does not speak the list's version fails ADD before any plugin runs", async (t) => {
  const { f, runner } = setup(t, [{ type: "first" }, { type: "old" }]);
  f.answer("old", "VERSION", { cniVersion: "0.4.0", supportedVersions: ["0.3.1", "0.4.0"] });
  await assert.rejects(
    runner.add({ containerId: "c4", netns: NETNS }),
    (err: unknown) => err instanceof CniError && err.code === CniErrorCode.INCOMPATIBLE_VERSION && err.plugin === "old",
  );
  assert.deepEqual(withoutVersion(f), []);
  await assert.rejects(runner.add({ containerId: "bad/id", netns: NETNS }), /invalid container id/);
});

test("CHECK needs cniVersion 0.4.0; disableCheck skips the plugins", async (t) => {
  const { runner } = setup(t, [{ type: "first" }], "0.3.1");
  await assert.rejects(runner.check({ containerId: "c5", netns: NETNS }), /CHECK needs cniVersion 0.4.0/);
  const list: NetworkConfigList = { ...runner.list, cniVersion: "1.0.0", disableCheck: true };
  const { f, cacheDir } = setup(t, [{ type: "first" }]);
  const r = new CniRunner(list, { pluginDirs: [f.binDir], cacheDir, env: f.env });
  f.answer("first", "ADD", bridgeResult("10.99.0.5", NETNS));
  r.saveResult({ containerId: "c5", netns: NETNS }, await r.add({ containerId: "c5", netns: NETNS }));
  await r.check({ containerId: "c5", netns: NETNS });
  assert.equal(f.calls().filter((c) => c.command === "CHECK").length, 0);
});

// setupNetwork over fake plugins (no "bridge" type, so no link, isolation or firewall work).
function workspaceNet(t: { after: (fn: () => void) => void }) {
  const { f, list, cacheDir } = setup(t, [{ type: "fakebr" }, { type: "fakepm" }]);
  const logs: string[] = [];
  const net = new WorkspaceNetwork(list, { pluginDirs: [f.binDir], cacheDir, pluginEnv: f.env, log: (m) => logs.push(m) });
  f.answer("fakepm", "ADD", bridgeResult("10.99.0.9", NETNS));
  return { f, net, logs };
}

const sequence = (f: FakeCni) => withoutVersion(f).map((c) => `${c.plugin} ${c.command}`);

test("setupNetwork: 'already exists' is undone with DEL and retried once", async (t) => {
  const { f, net, logs } = workspaceNet(t);
  // Call numbers count every recorded call, VERSION probes (2) included.
  f.answer("fakebr", "ADD", { code: 999, msg: 'container veth name provided (eth0) already exists' }, { code: 1, call: 2 });
  f.answer("fakebr", "ADD", bridgeResult("10.99.0.9", NETNS));
  const a = await net.setupNetwork("ws1", NETNS);
  assert.equal(a.ip, "10.99.0.9");
  assert.equal(a.isolated, false);
  assert.deepEqual(sequence(f), ["fakebr ADD", "fakepm DEL", "fakebr DEL", "fakebr ADD", "fakepm ADD"]);
  assert.match(logs.join("\n"), /attempt 1: fakebr: container veth name provided \(eth0\) already exists/);
  assert.equal(net.cachedAttachment("ws1")?.ip, "10.99.0.9");
});

test("setupNetwork: a second failure is the error; everything is undone", async (t) => {
  const { f, net } = workspaceNet(t);
  f.answer("fakebr", "ADD", { code: 999, msg: "could not set bridge's mac: invalid argument" }, { code: 1 });
  await assert.rejects(
    net.setupNetwork("ws2", NETNS),
    (err: unknown) =>
      err instanceof NetworkSetupError &&
      err.cause instanceof CniError &&
      /network setup for ws2 failed: fakebr: could not set bridge's mac.*\(after one retry\)/.test(err.message),
  );
  assert.deepEqual(sequence(f), ["fakebr ADD", "fakepm DEL", "fakebr DEL", "fakebr ADD", "fakepm DEL", "fakebr DEL"]);
  assert.equal(net.runner.cachedResult("ws2"), undefined);
});

test("setupNetwork: address exhaustion is not retried; a result without IPv4 is an error", async (t) => {
  const { f, net } = workspaceNet(t);
  f.answer("fakebr", "ADD", { code: 999, msg: "failed to allocate for range 0: no IP addresses available in range set: 10.99.0.1-10.99.0.2" }, { code: 1 });
  await assert.rejects(net.setupNetwork("ws3", NETNS), /no IP addresses available in range set: 10\.99\.0\.1-10\.99\.0\.2 \[CNI code 999\]$/);
  assert.deepEqual(sequence(f), ["fakebr ADD", "fakepm DEL", "fakebr DEL"]);

  const g = workspaceNet(t);
  const v6only = { cniVersion: "1.0.0", interfaces: [{ name: "eth0", sandbox: NETNS }], ips: [{ address: "fd00::5/64", interface: 0 }] };
  g.f.answer("fakebr", "ADD", v6only);
  g.f.answer("fakepm", "ADD", v6only);
  await assert.rejects(net.setupNetwork("ws4", "/proc/999999999/ns/net"), /netns .* does not exist/);
  await assert.rejects(g.net.setupNetwork("ws4", NETNS), /no usable IPv4 address/);
  assert.deepEqual(sequence(g.f), ["fakebr ADD", "fakepm ADD", "fakepm DEL", "fakebr DEL"]);
  assert.equal(g.net.runner.cachedResult("ws4"), undefined);
});

test("cleanupStale releases cached results of containers that are not live", async (t) => {
  const { f, net } = workspaceNet(t);
  f.answer("fakebr", "ADD", bridgeResult("10.99.0.9", NETNS));
  await net.setupNetwork("live-1", NETNS);
  await net.setupNetwork("dead-1", NETNS);
  const report = await net.cleanupStale(["live-1"]);
  assert.deepEqual(report, { released: ["dead-1"], errors: [] });
  assert.deepEqual(net.runner.cachedContainerIds(), ["live-1"]);
  const dels = withoutVersion(f).filter((c) => c.command === "DEL");
  assert.ok(dels.every((c) => c.env.CNI_CONTAINERID === "dead-1" && c.env.CNI_NETNS === ""));
});
