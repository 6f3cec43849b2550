// Loading, validating and writing the CNI network list.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  bridgeName,
  defaultConfList,
  ensureConfList,
  ipamLeaseDir,
  iptablesFirewallEnabled,
  ipMasqEnabled,
  ipv4Subnets,
  loadConfList,
  parseConfList,
} from "../../host/network/conflist.js";
import { CniConfigError } from "../../host/network/errors.js";
import { ruleSpec } from "../../host/network/links.js";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-conflist-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("an empty conf dir gets the default list, written once and then loaded as is", (t) => {
  const dir = path.join(tempDir(t), "net.d");
  const list = ensureConfList(dir);
  assert.equal(list.file, path.join(dir, "memoh-cni.conflist"));
  assert.equal(list.name, "memoh-cni");
  assert.equal(list.cniVersion, "1.0.0");
  assert.deepEqual(
    list.plugins.map((p) => p.type),
    ["bridge", "portmap", "firewall"],
  );
  const [bridge, portmap, firewall] = list.plugins;
  assert.equal(bridge?.bridge, "cni0");
  assert.equal(bridge?.isGateway, true);
  assert.equal(bridge?.ipMasq, true);
  assert.equal(bridge?.hairpinMode, true);
  assert.deepEqual(bridge?.ipam, {
    type: "host-local",
    ranges: [[{ subnet: "10.88.0.0/16" }]],
    routes: [{ dst: "0.0.0.0/0" }],
    dataDir: "/var/lib/memoh/cni/ipam",
  });
  assert.deepEqual(portmap?.capabilities, { portMappings: true });
  // FORWARD ACCEPT rules for the subnet on hosts whose FORWARD policy is DROP; iptables
  // explicitly, so the plugin does not go looking for firewalld.
  assert.deepEqual(firewall, { type: "firewall", backend: "iptables" });
  assert.equal(iptablesFirewallEnabled(list), true);
  assert.equal(bridgeName(list), "cni0");
  assert.deepEqual(ipv4Subnets(list), ["10.88.0.0/16"]);
  assert.equal(ipamLeaseDir(list), "/var/lib/memoh/cni/ipam/memoh-cni");

  // An operator's edit survives the next start.
  const edited = JSON.parse(fs.readFileSync(list.file!, "utf8"));
  edited.plugins[0].bridge = "memoh0";
  fs.writeFileSync(list.file!, JSON.stringify(edited));
  assert.equal(bridgeName(ensureConfList(dir)), "memoh0");
});

test("the default is configurable: name, bridge, subnet (normalised), IPAM dir, ipMasq, portmap, firewall", (t) => {
  const dir = tempDir(t);
  const list = ensureConfList(dir, {
    name: "ws-net",
    bridge: "mtb1",
    subnet: "10.213.7.9/24",
    ipamDataDir: "/tmp/ipam",
    ipMasq: false,
    portmap: false,
    firewall: false,
  });
  assert.equal(list.file, path.join(dir, "ws-net.conflist"));
  assert.equal(list.plugins.length, 1);
  assert.equal(bridgeName(list), "mtb1");
  assert.deepEqual(ipv4Subnets(list), ["10.213.7.0/24"]);
  assert.equal(ipMasqEnabled(list), false);
  assert.equal(ipamLeaseDir(list), "/tmp/ipam/ws-net");
  assert.equal(iptablesFirewallEnabled(list), false);
  assert.deepEqual(
    (defaultConfList({ portmap: false }).plugins as Array<{ type: string }>).map((p) => p.type),
    ["bridge", "firewall"],
  );
  assert.deepEqual(
    (defaultConfList({ cniVersion: "0.3.1", firewall: false }).plugins as Array<{ type: string }>).map((p) => p.type),
    ["bridge", "portmap"],
  );
  // The firewall plugin speaks 0.4.0 and later only: say so instead of failing at the first ADD.
  assert.throws(() => defaultConfList({ cniVersion: "0.3.1" }), /firewall plugin needs cniVersion 0\.4\.0.*firewall: false/);
  assert.throws(() => defaultConfList({ bridge: "a-bridge-name-too-long" }), /at most 15/);
  assert.throws(() => defaultConfList({ subnet: "10.0.0.0/31" }), /room for hosts/);
  assert.throws(() => defaultConfList({ subnet: "fd00::/64" }), /not an IPv4 CIDR/);
});

test("the product's list is picked by file name among other networks; a .conf is a one-plugin list", (t) => {
  const dir = tempDir(t);
  const other = { cniVersion: "1.0.0", name: "aaa-other", plugins: [{ type: "loopback" }] };
  fs.writeFileSync(path.join(dir, "10-aaa.conflist"), JSON.stringify(other));
  fs.writeFileSync(path.join(dir, "99-broken.conf"), "{ not json");
  fs.writeFileSync(
    path.join(dir, "memoh-cni.conf"),
    JSON.stringify({ cniVersion: "0.4.0", name: "memoh-cni", type: "bridge", bridge: "br9", ipam: { type: "host-local", subnet: "10.1.0.0/16" } }),
  );
  const list = loadConfList(dir, "memoh-cni");
  assert.ok(list !== undefined);
  assert.equal(list.cniVersion, "0.4.0");
  assert.equal(list.plugins.length, 1);
  assert.equal(list.plugins[0]?.type, "bridge");
  assert.equal(list.plugins[0]?.name, undefined, "name/cniVersion belong to the list, not the plugin");
  assert.deepEqual(ipv4Subnets(list), ["10.1.0.0/16"]);
  // A list the operator wrote is used as is: the firewall plugin is not added to it.
  const before = fs.readFileSync(path.join(dir, "memoh-cni.conf"), "utf8");
  assert.deepEqual(ensureConfList(dir).plugins.map((p) => p.type), ["bridge"]);
  assert.equal(fs.readFileSync(path.join(dir, "memoh-cni.conf"), "utf8"), before);
  assert.equal(iptablesFirewallEnabled(list), false);
  const firewalld = parseConfList(JSON.stringify({ cniVersion: "1.0.0", name: "fwd", plugins: [{ type: "bridge" }, { type: "firewall", backend: "firewalld" }] }));
  assert.equal(iptablesFirewallEnabled(firewalld), false, "firewalld keeps no rules in CNI-FORWARD");
  // By the name field when no file carries the name; lexical first without a name.
  assert.equal(loadConfList(dir, "aaa-other")?.name, "aaa-other");
  assert.equal(loadConfList(dir)?.name, "aaa-other");
  assert.equal(loadConfList(dir, "nope"), undefined);
  assert.equal(loadConfList(path.join(dir, "missing")), undefined);
});

test("invalid lists are rejected with the file and the field in the message", (t) => {
  const dir = tempDir(t);
  const cases: Array<[unknown, RegExp]> = [
    [{ cniVersion: "1.0.0", plugins: [{ type: "bridge" }] }, /name must match/],
    [{ cniVersion: "9.9.9", name: "x", plugins: [{ type: "bridge" }] }, /cniVersion "9.9.9" is not one of/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [] }, /non-empty array/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "" }] }, /plugins\[0\]\.type/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "../../bin/sh" }] }, /plugins\[0\]\.type/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "portmap", capabilities: { portMappings: "yes" } }] }, /capabilities/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "bridge", bridge: "sixteen-chars-xx" }] }, /at most 15/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "bridge", ipam: { type: "host-local", subnet: "10.0.0.0" } }] }, /CIDR/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "bridge", ipam: { subnet: "10.0.0.0/8" } }] }, /ipam\.type/],
    [{ cniVersion: "1.0.0", name: "x", plugins: [{ type: "bridge", ipam: { type: "host-local", dataDir: "rel" } }] }, /absolute/],
    [{ cniVersion: "1.0.0", name: "x" }, /neither a plugins list nor a plugin type/],
    [[1, 2], /not a JSON object/],
  ];
  for (const [doc, message] of cases) {
    const file = path.join(dir, "memoh-cni.conflist");
    fs.writeFileSync(file, JSON.stringify(doc));
    assert.throws(
      () => loadConfList(dir, "memoh-cni"),
      (err: unknown) => err instanceof CniConfigError && message.test(err.message) && err.message.startsWith(file),
      `${JSON.stringify(doc)} should fail with ${message}`,
    );
  }
  assert.throws(() => parseConfList("{", "f.conflist"), /f\.conflist: not valid JSON/);
  fs.writeFileSync(path.join(dir, "memoh-cni.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: "other", plugins: [{ type: "bridge" }] }));
  assert.throws(() => loadConfList(dir, "memoh-cni"), /network name is other, expected memoh-cni/);
});

test("networkOptionsFromEnv reads dirs, data root and the isolation switch", async () => {
  const { networkOptionsFromEnv } = await import("../../host/network/network.js");
  const o = networkOptionsFromEnv({ MEMOH_CNI_CONF_DIR: "/c", MEMOH_CNI_BIN_DIR: "/a:/b", MEMOH_DATA_ROOT: "/d", MEMOH_CNI_ISOLATION: "off" });
  assert.equal(o.confDir, "/c");
  assert.deepEqual(o.pluginDirs, ["/a", "/b"]);
  assert.equal(o.cacheDir, "/d/cni/cache");
  assert.equal(o.isolation, false);
  assert.equal(networkOptionsFromEnv({}).isolation, undefined);
  assert.equal(networkOptionsFromEnv({ MEMOH_CNI_ISOLATION: "on" }).isolation, true);
  assert.throws(() => networkOptionsFromEnv({ MEMOH_CNI_ISOLATION: "maybe" }), /must be on or off/);
  assert.equal(o.defaults?.firewall, undefined);
  assert.deepEqual(networkOptionsFromEnv({ MEMOH_DATA_ROOT: "/d", MEMOH_CNI_FIREWALL: "off" }).defaults, { ipamDataDir: "/d/cni/ipam", firewall: false });
  assert.equal(networkOptionsFromEnv({ MEMOH_CNI_FIREWALL: "on" }).defaults?.firewall, true);
  assert.throws(() => networkOptionsFromEnv({ MEMOH_CNI_FIREWALL: "drop" }), /MEMOH_CNI_FIREWALL must be on or off/);
  assert.equal(networkOptionsFromEnv({}).blockHost, undefined);
  assert.equal(networkOptionsFromEnv({ MEMOH_CNI_BLOCK_HOST: "off" }).blockHost, false);
  assert.equal(networkOptionsFromEnv({ MEMOH_CNI_BLOCK_METADATA: "off" }).blockMetadata, false);
  assert.equal(networkOptionsFromEnv({ MEMOH_CNI_BLOCK_METADATA: "on" }).blockMetadata, true);
  assert.throws(() => networkOptionsFromEnv({ MEMOH_CNI_BLOCK_HOST: "allow" }), /MEMOH_CNI_BLOCK_HOST must be on or off/);
});

test("iptables -S rule lines split into arguments with quoted comments kept whole", () => {
  assert.deepEqual(ruleSpec('-s 10.88.0.5/32 -m comment --comment "name: \\"memoh-cni\\" id: \\"workspace-a\\"" -j CNI-0123'), [
    "-s",
    "10.88.0.5/32",
    "-m",
    "comment",
    "--comment",
    'name: "memoh-cni" id: "workspace-a"',
    "-j",
    "CNI-0123",
  ]);
});
