// Executing one CNI plugin: environment, stdin, result parsing, error mapping, timeout.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { execPlugin, findPlugin, pluginAdd, pluginVersion } from "../../host/network/plugin.js";
import { CniError, CniErrorCode } from "../../host/network/errors.js";
import { firstIPv4, parseResult } from "../../host/network/result.js";
import { bridgeResult, makeFakeCni } from "./helpers/fake-cni.js";

function fake(t: { after: (fn: () => void) => void }, plugins = ["fake"]) {
  const f = makeFakeCni(plugins);
  t.after(() => f.remove());
  return f;
}

test("the plugin gets the CNI_* environment and its config on stdin; the result is parsed", async (t) => {
  const f = fake(t);
  f.answer("fake", "ADD", bridgeResult("10.99.0.5", "/proc/1/ns/net"));
  const result = await pluginAdd(
    "fake",
    { containerId: "c-1", netns: "/proc/1/ns/net", ifName: "eth0", args: { IgnoreUnknown: "1", K: "v" }, config: { type: "fake", name: "n", cniVersion: "1.0.0" } },
    { pluginDirs: ["/nonexistent", f.binDir], env: f.env },
  );
  const [call] = f.calls();
  assert.deepEqual(call?.env, {
    CNI_ARGS: "IgnoreUnknown=1;K=v",
    CNI_COMMAND: "ADD",
    CNI_CONTAINERID: "c-1",
    CNI_IFNAME: "eth0",
    CNI_NETNS: "/proc/1/ns/net",
    CNI_PATH: `/nonexistent:${f.binDir}`,
  });
  assert.deepEqual(call?.stdin, { type: "fake", name: "n", cniVersion: "1.0.0" });
  assert.equal(result.interfaces[2]?.sandbox, "/proc/1/ns/net");
  assert.equal(result.interfaces[1]?.sandbox, undefined);
  assert.deepEqual(firstIPv4(result), { ip: "10.99.0.5", prefixLength: 24, gateway: "10.99.0.1" });
});

test("an error object on stdout becomes a CniError with the plugin's code, msg and details", async (t) => {
  const f = fake(t);
  f.answer("fake", "ADD", { cniVersion: "1.0.0", code: 11, msg: "try again", details: "lock busy" }, { code: 1 });
  await assert.rejects(
    execPlugin("fake", { command: "ADD", config: {} }, { pluginDirs: [f.binDir], env: f.env }),
    (err: unknown) =>
      err instanceof CniError &&
      err.code === CniErrorCode.TRY_AGAIN_LATER &&
      err.msg === "try again" &&
      err.details === "lock busy" &&
      err.plugin === "fake" &&
      /fake: try again \(lock busy\) \[CNI code 11\]/.test(err.message),
  );
});

test("a crash without an error object keeps stderr; garbage on success is INVALID_RESULT", async (t) => {
  const f = fake(t);
  f.answer("fake", "DEL", "", { code: 2, stderr: "panic: runtime error" });
  await assert.rejects(
    execPlugin("fake", { command: "DEL", config: {} }, { pluginDirs: [f.binDir], env: f.env }),
    (err: unknown) => err instanceof CniError && err.code === CniErrorCode.EXEC_FAILURE && /exited 2: panic: runtime error/.test(err.message),
  );
  f.answer("fake", "ADD", "not json");
  await assert.rejects(
    pluginAdd("fake", { config: {} }, { pluginDirs: [f.binDir], env: f.env }),
    (err: unknown) => err instanceof CniError && err.code === CniErrorCode.INVALID_RESULT,
  );
  f.answer("fake", "ADD", { cniVersion: "1.0.0", ips: [{ address: "10.0.0.300/24" }] });
  await assert.rejects(pluginAdd("fake", { config: {} }, { pluginDirs: [f.binDir], env: f.env }), /ips\[0\]\.address is not an IP/);
  f.answer("fake", "ADD", { cniVersion: "1.0.0", interfaces: [], ips: [{ address: "10.0.0.3/24", interface: 4 }] });
  await assert.rejects(pluginAdd("fake", { config: {} }, { pluginDirs: [f.binDir], env: f.env }), /not an index into interfaces/);
  // DEL prints nothing on success.
  f.answer("fake", "CHECK", "");
  assert.equal(await execPlugin("fake", { command: "CHECK", config: {} }, { pluginDirs: [f.binDir], env: f.env }), undefined);
});

test("a plugin that overruns its deadline is killed (with what it spawned) and reported as a timeout", async (t) => {
  const f = fake(t);
  f.sleep("fake", "ADD", 30);
  const started = Date.now();
  await assert.rejects(
    pluginAdd("fake", { config: {} }, { pluginDirs: [f.binDir], env: f.env, timeoutMs: 300 }),
    (err: unknown) => err instanceof CniError && err.code === CniErrorCode.TIMEOUT && /timed out after 300 ms/.test(err.message),
  );
  assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  const pid = Number(fs.readFileSync(`${f.dir}/calls/000-fake-ADD.pid`, "utf8"));
  assert.throws(() => process.kill(pid, 0), /ESRCH/, "the plugin process is still alive");
  // The script's sleep child was in the plugin's process group (stat field 5 = pgrp): it is gone too.
  const sleeps = fs
    .readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, "utf8") === "sleep\u000030\u0000" && fs.readFileSync(`/proc/${p}/stat`, "utf8").split(" ")[4] === String(pid);
      } catch {
        return false;
      }
    });
  assert.deepEqual(sleeps, []);
});

test("plugin lookup: first dir wins, missing plugin and path-like types are errors", (t) => {
  const f = fake(t);
  assert.equal(findPlugin("fake", [f.binDir, "/usr/lib/cni"]), `${f.binDir}/fake`);
  assert.throws(() => findPlugin("nope", [f.binDir]), (err: unknown) => err instanceof CniError && err.code === CniErrorCode.PLUGIN_NOT_FOUND);
  assert.throws(() => findPlugin("../fake", [f.binDir]), /invalid plugin type/);
});

test("VERSION probe parses supportedVersions and rejects a malformed reply", async (t) => {
  const f = fake(t);
  const info = await pluginVersion("fake", "1.0.0", { pluginDirs: [f.binDir], env: f.env });
  assert.deepEqual(info, { cniVersion: "1.0.0", supportedVersions: ["0.4.0", "1.0.0"] });
  assert.deepEqual(f.calls()[0]?.stdin, { cniVersion: "1.0.0" });
  f.answer("fake", "VERSION", { cniVersion: "1.0.0", supportedVersions: "1.0.0" });
  await assert.rejects(pluginVersion("fake", "1.0.0", { pluginDirs: [f.binDir], env: f.env }), /supportedVersions/);
});

test("firstIPv4 skips IPv6 and host-side addresses", () => {
  const r = parseResult({
    cniVersion: "1.0.0",
    interfaces: [{ name: "br" }, { name: "eth0", sandbox: "/x" }],
    ips: [
      { address: "fd00::2/64", interface: 1 },
      { address: "10.1.0.1/16", interface: 0 },
      { address: "10.1.0.7/16", interface: 1 },
    ],
  });
  assert.equal(firstIPv4(r)?.ip, "10.1.0.7");
  assert.equal(firstIPv4(parseResult({ cniVersion: "1.0.0", ips: [{ address: "fd00::2/64" }] })), undefined);
});
