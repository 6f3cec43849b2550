// Workspace resource limits against a private containerd, runc's real cgroups, CNI and
// PostgreSQL: defaults, per-workspace overrides kept in the row, live changes without a
// restart, re-applied on rebuild and restart, shown in the status.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { CGROUP_ROOT, detectCgroupVersion } from "../../host/containerd/cgroups.js";
import { WorkspaceError } from "../../host/workspace/errors.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { startWorkspaceFixture, type WorkspaceFixture } from "./env/workspace.js";

const MIB = 1024 * 1024;
let fx: WorkspaceFixture;
let mgr: WorkspaceManager;

before(async () => {
  fx = await startWorkspaceFixture();
  mgr = fx.manager({ defaultLimits: { memoryBytes: 256 * MIB, cpus: 1, pids: 256 } });
});

after(async () => {
  await fx?.close();
});

/** What the kernel enforces for the container's task right now, read from its cgroup files. */
function cgroupLimits(containerId: string): { memoryBytes: number; cpuQuota: number; pids: number } {
  const rel = path.join(fx.env.namespace, containerId);
  if (detectCgroupVersion() === "v2") {
    const dir = path.join(CGROUP_ROOT, rel);
    const [quota] = fs.readFileSync(path.join(dir, "cpu.max"), "utf8").trim().split(" ");
    return {
      memoryBytes: Number(fs.readFileSync(path.join(dir, "memory.max"), "utf8")),
      cpuQuota: Number(quota),
      pids: Number(fs.readFileSync(path.join(dir, "pids.max"), "utf8")),
    };
  }
  return {
    memoryBytes: Number(fs.readFileSync(path.join(CGROUP_ROOT, "memory", rel, "memory.limit_in_bytes"), "utf8")),
    cpuQuota: Number(fs.readFileSync(path.join(CGROUP_ROOT, "cpu", rel, "cpu.cfs_quota_us"), "utf8")),
    pids: Number(fs.readFileSync(path.join(CGROUP_ROOT, "pids", rel, "pids.max"), "utf8")),
  };
}

test("limits: defaults from the manager, overrides on create kept in the row, live updates without a restart, kept through restart and rebuild, shown in the status", async () => {
  const plain = fx.botName("lim-default");
  const a = await mgr.ensure(plain);
  assert.deepEqual(a.limits, { memoryBytes: 256 * MIB, cpus: 1, pids: 256 });
  assert.deepEqual(cgroupLimits(a.containerId), { memoryBytes: 256 * MIB, cpuQuota: 100_000, pids: 256 });
  assert.equal(a.cgroup?.memory?.limitBytes, 256 * MIB);
  assert.equal(a.cgroup?.pids?.limit, 256);
  assert.ok((a.cgroup?.memory?.usageBytes ?? 0) > 0, "no memory use read from the cgroup");

  const bot = fx.botName("lim");
  const b = await mgr.ensure(bot, { limits: { memoryBytes: 128 * MIB, pids: 100 } });
  assert.deepEqual(b.limits, { memoryBytes: 128 * MIB, cpus: 1, pids: 100 });
  assert.deepEqual((await fx.store.getContainerByBot(bot))?.limits, { memoryBytes: 128 * MIB, cpus: 1, pids: 100 });
  assert.deepEqual(cgroupLimits(b.containerId), { memoryBytes: 128 * MIB, cpuQuota: 100_000, pids: 100 });

  // Live: the same task, new limits in its cgroup.
  const updated = await mgr.updateLimits(bot, { memoryBytes: 192 * MIB, cpus: 0.5 });
  assert.equal(updated.pid, b.pid, "the update restarted the workspace");
  assert.deepEqual(updated.limits, { memoryBytes: 192 * MIB, cpus: 0.5, pids: 100 });
  assert.deepEqual(cgroupLimits(b.containerId), { memoryBytes: 192 * MIB, cpuQuota: 50_000, pids: 100 });
  const events = (await fx.store.listEvents(b.containerId, 20)).map((e) => e.eventType);
  assert.ok(events.includes("limits_changed"), events.join(","));

  // Bad input changes nothing.
  for (const bad of [{ memoryBytes: 1 }, { cpus: 0 }, { pids: 1.5 }, { pids: -3 }, { memory: 5 }] as unknown[]) {
    await assert.rejects(mgr.updateLimits(bot, bad as { pids: number }), (err: unknown) => err instanceof WorkspaceError && err.code === "invalid_argument", JSON.stringify(bad));
  }
  await assert.rejects(mgr.ensure(fx.botName("lim-bad"), { limits: { memoryBytes: -1 } }), (err: unknown) => err instanceof WorkspaceError && err.code === "invalid_argument");
  assert.deepEqual(cgroupLimits(b.containerId), { memoryBytes: 192 * MIB, cpuQuota: 50_000, pids: 100 });

  // Asking for the existing workspace with other limits is a conflict naming them.
  await assert.rejects(mgr.ensure(bot, { limits: { pids: 300 } }), (err: unknown) => {
    assert.ok(err instanceof WorkspaceError && err.code === "conflict", String(err));
    assert.match(err.message, /pids 100 \(asked: 300\)/);
    return true;
  });

  // A restart keeps them (the container's spec was updated too).
  await mgr.stop(bot);
  const restarted = await mgr.start(bot);
  assert.notEqual(restarted.pid, b.pid);
  assert.deepEqual(cgroupLimits(b.containerId), { memoryBytes: 192 * MIB, cpuQuota: 50_000, pids: 100 });

  // A rebuild (the container lost behind our back) re-applies them from the row.
  await fx.cd.tasks.stop(b.containerId, 1_000);
  await fx.net.removeNetwork(b.containerId);
  await fx.cd.containers.delete(b.containerId, { removeSnapshot: false });
  const report = await mgr.reconcile();
  assert.equal(report.find((e) => e.botId === bot)?.action, "rebuilt");
  assert.deepEqual(cgroupLimits(b.containerId), { memoryBytes: 192 * MIB, cpuQuota: 50_000, pids: 100 });
  assert.deepEqual((await mgr.status(bot)).limits, { memoryBytes: 192 * MIB, cpus: 0.5, pids: 100 });

  await mgr.delete(plain);
  await mgr.delete(bot);
});
