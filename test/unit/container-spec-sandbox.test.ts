// The workspace spec's OOM scores and masked paths, as the manager builds it.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildSpec, defaultUnixSpec } from "../../host/containerd/spec.js";
import { DEFAULT_LIMITS } from "../../host/workspace/limits.js";
import { refreshedSandbox } from "../../host/workspace/refresh-spec.js";
import { OOM_SCORES, sideChannelPaths, withAgentProcess, withWorkspaceSandbox, workspaceSpecOpts } from "../../host/workspace/container-spec.js";

const workspaceSpec = (more: Partial<Parameters<typeof workspaceSpecOpts>[0]> = {}) =>
  buildSpec(
    defaultUnixSpec("memoh", "workspace-b"),
    ...workspaceSpecOpts({
      containerId: "workspace-b",
      resolvConf: "/etc/resolv.conf",
      runtimePath: "/opt/memoh",
      socketDir: "/run/memoh-test/b",
      imageConfig: {},
      cdiDevices: [],
      limits: DEFAULT_LIMITS,
      ...more,
    }),
  );

test("the agent starts at oom_score_adj 0, written explicitly, and its children above it, whatever the host's capabilities", () => {
  const spec = workspaceSpec();
  // runc writes this value with CAP_SYS_RESOURCE and the kernel makes it the floor of
  // every process in the workspace: below 0 they could lower themselves below the host's.
  assert.equal(spec.process.oomScoreAdj, 0);
  assert.ok(spec.process.env.includes("BRIDGE_CHILD_OOM_SCORE_ADJ=500"), spec.process.env.join("\n"));
  assert.deepEqual({ ...OOM_SCORES }, { agent: 0, children: 500 });
  assert.throws(() => withAgentProcess("workspace-b", { agent: -998, children: 0 }), /must not be below 0/);
});

test("a workspace masks containerd's default paths, powercap included, /proc/interrupts and each CPU's thermal_throttle", () => {
  const masked = workspaceSpec().linux.maskedPaths;
  for (const p of ["/proc/kcore", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/interrupts"]) assert.ok(masked.includes(p), `${p} is not masked: ${masked.join(" ")}`);
  assert.equal(new Set(masked).size, masked.length, "a path is masked twice");

  const cpuDir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-cpus-"));
  try {
    for (const cpu of ["cpu0", "cpu1", "cpu10", "cpu2"]) fs.mkdirSync(path.join(cpuDir, cpu, "thermal_throttle"), { recursive: true });
    fs.mkdirSync(path.join(cpuDir, "cpu3")); // no thermal_throttle on this one
    fs.mkdirSync(path.join(cpuDir, "cpufreq"));
    const paths = sideChannelPaths(cpuDir);
    assert.deepEqual(paths, [
      "/proc/interrupts",
      "/sys/devices/system/cpu/cpu0/thermal_throttle",
      "/sys/devices/system/cpu/cpu1/thermal_throttle",
      "/sys/devices/system/cpu/cpu2/thermal_throttle",
      "/sys/devices/system/cpu/cpu10/thermal_throttle",
    ]);
    const spec = buildSpec(defaultUnixSpec("memoh", "w"), withWorkspaceSandbox(paths));
    for (const p of paths) assert.ok(spec.linux.maskedPaths.includes(p), p);
  } finally {
    fs.rmSync(cpuDir, { recursive: true, force: true });
  }
  assert.deepEqual(sideChannelPaths(path.join(os.tmpdir(), "memoh-no-such-dir")), ["/proc/interrupts"]);
});

test("a stored spec of an earlier version gets this version's sandbox and keeps everything else; a current one is unchanged; a foreign one is left alone", () => {
  const current = workspaceSpec();
  assert.equal(JSON.stringify(refreshedSandbox(current)), JSON.stringify(current), "refreshing a current spec changed it");
  // As the server builds it: with the agent's job limits after the OOM variable.
  const withJobs = workspaceSpec({ imageConfig: { Env: ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"] }, jobs: { maxRuntimeMs: 3_600_000, retentionMs: 86_400_000 } });
  assert.ok(withJobs.process.env.at(-1)!.startsWith("BRIDGE_JOB_"), withJobs.process.env.join("\n"));
  assert.equal(JSON.stringify(refreshedSandbox(withJobs)), JSON.stringify(withJobs), "refreshing a current spec with job limits changed it");

  // What an earlier version stored: the agent at -998 with children at 0, fewer masks, no
  // IPv6 sysctl, CAP_NET_RAW, no seccomp; and things of its own that must stay.
  const old = structuredClone(current);
  old.process.oomScoreAdj = -998;
  old.process.env = old.process.env.map((e) => (e.startsWith("BRIDGE_CHILD_OOM_SCORE_ADJ=") ? "BRIDGE_CHILD_OOM_SCORE_ADJ=0" : e));
  old.linux.maskedPaths = old.linux.maskedPaths.filter((p) => p !== "/proc/interrupts" && !p.includes("powercap"));
  old.linux.sysctl = { "net.ipv4.ping_group_range": "0 2147483647" };
  old.process.capabilities.bounding.push("CAP_NET_RAW");
  delete old.linux.seccomp;
  old.mounts.push({ destination: "/extra", type: "bind", source: "/srv/extra", options: ["rbind", "ro"] });
  old.linux.resources.pids = { limit: 77 };
  old.hostname = "kept";

  const next = refreshedSandbox(old)!;
  assert.equal(next.process.oomScoreAdj, 0);
  assert.deepEqual(next.process.env.filter((e) => e.startsWith("BRIDGE_CHILD_OOM_SCORE_ADJ=")), ["BRIDGE_CHILD_OOM_SCORE_ADJ=500"]);
  for (const p of ["/proc/interrupts", "/sys/devices/virtual/powercap"]) assert.ok(next.linux.maskedPaths.includes(p), p);
  assert.ok(!next.process.capabilities.bounding.includes("CAP_NET_RAW"));
  assert.deepEqual(next.linux.seccomp, current.linux.seccomp);
  assert.deepEqual(next.linux.sysctl, current.linux.sysctl);
  assert.deepEqual(next.mounts.at(-1), { destination: "/extra", type: "bind", source: "/srv/extra", options: ["rbind", "ro"] });
  assert.deepEqual(next.linux.resources.pids, { limit: 77 });
  assert.equal(next.hostname, "kept");
  assert.equal(old.process.oomScoreAdj, -998, "the stored spec object was changed in place");

  const foreign = structuredClone(current);
  foreign.process.args = ["/bin/sh"];
  assert.equal(refreshedSandbox(foreign), undefined);
});
