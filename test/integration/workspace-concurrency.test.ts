// The workspace manager under concurrency, against a private containerd, real CNI
// plugins and PostgreSQL: lifecycle calls racing reconcile sweeps and the supervisor,
// network hygiene during a start, exits during and right after a restart, bounded lock
// waits, and calls to a workspace being deleted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CdiRegistry } from "../../host/containerd/cdi.js";
import { ContainerdConnection } from "../../host/containerd/connection.js";
import type { WorkspaceNetwork } from "../../host/network/network.js";
import { runTool } from "../../host/network/links.js";
import { WorkspaceError } from "../../host/workspace/errors.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { WorkspaceSupervisor, type SupervisorEvent } from "../../host/workspace/supervisor.js";
import { startWorkspaceFixture, waitFor, type WorkspaceFixture } from "./env/workspace.js";

let fx: WorkspaceFixture;
let mgr: WorkspaceManager;

before(async () => {
  fx = await startWorkspaceFixture();
  mgr = fx.manager();
});

after(async () => {
  await fx?.close();
});

/** Leases, cache entries and bridge ports of our bridge belong to running tasks only; no veth of a gone container stays. */
async function assertNetworkMatchesTasks(): Promise<void> {
  await fx.assertNoNetworkLeaks();
}

test("delete and stop racing reconcile sweeps and the supervisor: the workspace stays deleted or stopped, nothing is rebuilt, nothing leaks", async () => {
  const events: SupervisorEvent[] = [];
  const sup = new WorkspaceSupervisor(mgr, fx.cd.conn, { restartDelayMs: 50, probeIntervalMs: 200, probeTimeoutMs: 2_000, onEvent: (e) => events.push(e) });
  sup.start();
  await sup.ready;
  try {
    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      const doomed = fx.botName(`del${round}`);
      const paused = fx.botName(`stp${round}`);
      await Promise.all([mgr.ensure(doomed), mgr.ensure(paused)]);
      // The deletion and the stop take their bots' locks first; the sweeps list the rows
      // meanwhile (with both still there) and then wait for those locks.
      const jitter = round % 3;
      const deleting = mgr.delete(doomed);
      const stopping = mgr.stop(paused);
      if (jitter > 0) await sleep(jitter * 15);
      const sweeps = [mgr.reconcile(), mgr.reconcile()];
      const [, , first, second] = await Promise.all([deleting, stopping, ...sweeps]);
      for (const report of [first!, second!]) {
        const d = report.find((e) => e.botId === doomed);
        assert.ok(d === undefined || d.action === "skipped" || d.action === "deleted", `round ${round}: reconcile did ${JSON.stringify(d)} to the deleted workspace`);
        const s = report.find((e) => e.botId === paused);
        assert.ok(s === undefined || s.action === "stopped", `round ${round}: reconcile did ${JSON.stringify(s)} to the stopped workspace`);
      }
      // Give the supervisor a watchdog round and the exit events time to arrive: neither may undo anything.
      await sleep(400);
      await fx.assertRowMatchesLive(doomed, "absent");
      await fx.assertRowMatchesLive(paused, "stopped");
      assert.equal((await fx.cd.snapshots.exists(`workspace-${doomed}`)), false, "the deleted workspace's rootfs is back");
      await mgr.delete(paused);
      await assertNetworkMatchesTasks();
    }
    assert.deepEqual(
      events.filter((e) => e.type === "restarted" || e.type === "unresponsive_restarted"),
      [],
      "the supervisor restarted a workspace that was stopped or deleted on purpose",
    );
  } finally {
    await sup.close();
  }
});

test("a workspace between CNI ADD and task start keeps its address, rules and reachability through a reconcile sweep", async () => {
  const bot = fx.botName("mid");
  const containerId = `workspace-${bot}`;
  let reached!: () => void;
  const atGate = new Promise<void>((r) => (reached = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let hygieneDone!: () => void;
  const afterHygiene = new Promise<void>((r) => (hygieneDone = r));
  // The real network, with a pause after ADD for this container, and a signal once a
  // sweep's hygiene has run (its last step).
  const gated = new Proxy(fx.net, {
    get(target, prop) {
      if (prop === "setupNetwork") {
        return async (...args: Parameters<WorkspaceNetwork["setupNetwork"]>) => {
          const attached = await target.setupNetwork(...args);
          if (args[0] === containerId) {
            reached();
            await gate;
          }
          return attached;
        };
      }
      if (prop === "sweepOrphanedFirewallRules") {
        return async () => {
          const removed = await target.sweepOrphanedFirewallRules();
          hygieneDone();
          return removed;
        };
      }
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  const m = fx.manager({ network: gated });
  const starting = m.ensure(bot);
  await atGate;
  const ip = fx.net.cachedAttachment(containerId)?.ip;
  assert.ok(ip, "no address after ADD");
  const sweep = m.reconcile();
  await afterHygiene;
  release();
  const [status, report] = await Promise.all([starting, sweep]);
  assert.equal(status.task, "running");
  assert.equal(report.find((e) => e.botId === bot)?.action, "healthy");
  // Its address, lease, masquerade chain and forward rules are all still there.
  assert.equal(fx.net.cachedAttachment(containerId)?.ip, ip);
  assert.ok(fx.net.leaseOwners().includes(containerId), "its IP lease was released");
  const nat = await runTool("iptables", ["-t", "nat", "-S", "POSTROUTING"]);
  assert.match(nat.stdout, new RegExp(`id: \\\\"${containerId}\\\\"`), "its masquerade rule is gone");
  const fwd = await runTool("iptables", ["-S", "CNI-FORWARD"]);
  assert.match(fwd.stdout, new RegExp(ip.replace(/\./g, "\\.")), "its forward rules are gone");
  // The host reaches a server inside it at that address.
  await m.call(bot, (c) => c.exec({ command: "busybox nc -l -p 7000 -e echo reachable & sleep 0.2" }));
  const got = await waitFor("a TCP answer from the workspace", async () => {
    const r = await runTool("busybox", ["nc", "-w", "2", ip, "7000"]);
    return r.stdout.includes("reachable") ? r.stdout : undefined;
  }, 10_000, 200);
  assert.match(got, /reachable/);
  await m.delete(bot);
  await assertNetworkMatchesTasks();
});

test("an exit during or right after a supervisor restart is restarted too; the watchdog restarts a task whose exit was never delivered", async () => {
  const bot = fx.botName("exits");
  const ws = await mgr.ensure(bot);
  const events: SupervisorEvent[] = [];
  const sup = new WorkspaceSupervisor(mgr, fx.cd.conn, { restartDelayMs: 20, probeIntervalMs: 300, probeTimeoutMs: 2_000, onEvent: (e) => events.push(e) });
  sup.start();
  await sup.ready;
  try {
    const pids: number[] = [ws.pid!];
    // Kill the task; as soon as its replacement runs (the restart is still waiting for
    // the agent to answer), kill that one too.
    process.kill(ws.pid!, "SIGKILL");
    const second = await waitFor("the restarted task", async () => {
      const t = await fx.cd.tasks.status(ws.containerId);
      return t?.status === "running" && t.pid !== ws.pid ? t.pid : undefined;
    }, 20_000, 5);
    pids.push(second);
    process.kill(second, "SIGKILL");
    const third = await waitFor("a task after the second exit", async () => {
      const t = await fx.cd.tasks.status(ws.containerId);
      const row = await fx.store.getContainerByBot(bot);
      return t?.status === "running" && !pids.includes(t.pid) && row?.status === "running" ? t.pid : undefined;
    }, 30_000);
    pids.push(third);
    await mgr.call(bot, (c) => c.info());
    await fx.assertRowMatchesLive(bot, "running");
  } finally {
    await sup.close();
  }

  // A supervisor that never sees this namespace's events: only its watchdog can notice.
  const blind = new ContainerdConnection({ address: fx.env.address, namespace: `${fx.env.namespace}-elsewhere` });
  const watchdogEvents: SupervisorEvent[] = [];
  const watchdog = new WorkspaceSupervisor(mgr, blind, { restartDelayMs: 20, probeIntervalMs: 300, probeTimeoutMs: 2_000, onEvent: (e) => watchdogEvents.push(e) });
  watchdog.start();
  await watchdog.ready;
  try {
    const before = (await fx.cd.tasks.status(ws.containerId))!.pid;
    process.kill(before, "SIGKILL");
    const t0 = Date.now();
    await waitFor("the watchdog's restart", async () => {
      const t = await fx.cd.tasks.status(ws.containerId);
      return t?.status === "running" && t.pid !== before ? true : undefined;
    }, 10_000);
    const ms = Date.now() - t0;
    assert.ok(watchdogEvents.some((e) => e.type === "missed_exit" && e.containerId === ws.containerId), JSON.stringify(watchdogEvents));
    // One round is 300 ms; the restart itself (task, network, agent) takes a few hundred more.
    assert.ok(ms < 5_000, `the row said running for a dead task for ${ms} ms`);
    await waitFor("the row to say running", async () => ((await fx.store.getContainerByBot(bot))?.status === "running" ? true : undefined));
    await mgr.call(bot, (c) => c.info());
  } finally {
    await watchdog.close();
    blind.close();
  }
  await mgr.delete(bot);
});

test("a caller waiting for a busy bot's lock gives up with unavailable, its operation never runs, and other bots are not blocked", async () => {
  const m = fx.manager({ lockTimeoutMs: 300 });
  const stuck = fx.botName("stuck");
  const free = fx.botName("free");
  await m.ensure(stuck);
  await m.stop(stuck);
  let release!: () => void;
  const held = m.lock.run(`bot:${stuck}`, () => new Promise<void>((r) => (release = r)));
  try {
    const t0 = Date.now();
    await assert.rejects(m.start(stuck), (err: unknown) => {
      assert.ok(err instanceof WorkspaceError, String(err));
      assert.equal(err.code, "unavailable");
      assert.equal(err.reason, "lock_timeout");
      assert.match(err.message, new RegExp(`bot:${stuck} is busy`));
      return true;
    });
    const waited = Date.now() - t0;
    assert.ok(waited >= 250 && waited < 3_000, `gave up after ${waited} ms`);
    // Another bot is served meanwhile.
    const other = await m.ensure(free);
    assert.equal(other.task, "running");
    assert.equal((await m.call(free, (c) => c.info())).pid > 0, true);
  } finally {
    release();
    await held;
  }
  // The start that gave up never ran.
  await sleep(200);
  await fx.assertRowMatchesLive(stuck, "stopped");
  await m.delete(stuck);
  await m.delete(free);
});

test("calls to a workspace whose row says deleting answer not_found while its agent still runs; the deletion is finished next", async () => {
  const bot = fx.botName("dying");
  const ws = await mgr.ensure(bot);
  // A deletion cut short after it marked the row (an orchestrator that died there).
  await fx.store.setStatus(ws.containerId, "deleting", { type: "deleting", payload: { botId: bot } });
  const fresh = fx.manager();
  await assert.rejects(fresh.call(bot, (c) => c.info()), (err: unknown) => {
    assert.ok(err instanceof WorkspaceError, String(err));
    assert.equal(err.code, "not_found");
    return true;
  });
  assert.equal((await fx.cd.tasks.status(ws.containerId))?.status, "running", "the agent runs on until the deletion is finished");
  // A deletion under way in this process answers not_found from the moment it is asked for.
  const again = fx.botName("dying2");
  await fresh.ensure(again);
  const deleting = fresh.delete(again);
  await assert.rejects(fresh.call(again, (c) => c.info()), (err: unknown) => err instanceof WorkspaceError && err.code === "not_found");
  await deleting;
  // ensure finishes the cut-short deletion first, then creates a fresh workspace.
  const recreated = await fresh.ensure(bot);
  assert.notEqual(recreated.pid, ws.pid);
  const events = (await fx.store.listEvents(ws.containerId, 50)).map((e) => e.eventType);
  assert.ok(events.includes("deleted"), events.join(","));
  await fresh.delete(bot);
  await fx.assertRowMatchesLive(bot, "absent");
});

test("ensure of an existing workspace with another image or other devices is a conflict naming what differs, and changes nothing", async () => {
  const cdiDir = path.join(fx.dataRoot, "cdi-conflict");
  fs.mkdirSync(cdiDir, { recursive: true });
  fs.writeFileSync(
    path.join(cdiDir, "test.json"),
    JSON.stringify({ cdiVersion: "0.6.0", kind: "memoh-test.example/dev", devices: [{ name: "null0", containerEdits: { deviceNodes: [{ path: "/dev/memoh-null", hostPath: "/dev/null" }] } }] }),
  );
  const m = fx.manager({ cdiRegistry: CdiRegistry.load({ dirs: [cdiDir] }) });
  const bot = fx.botName("same");
  const ws = await m.ensure(bot);
  await assert.rejects(m.ensure(bot, { image: fx.images.glibc }), (err: unknown) => {
    assert.ok(err instanceof WorkspaceError, String(err));
    assert.equal(err.code, "conflict");
    assert.ok(err.message.includes(fx.images.glibc) && err.message.includes(fx.images.busybox), err.message);
    return true;
  });
  await assert.rejects(m.ensure(bot, { cdiDevices: ["memoh-test.example/dev=null0"] }), (err: unknown) => {
    assert.ok(err instanceof WorkspaceError, String(err));
    assert.equal(err.code, "conflict");
    assert.match(err.message, /devices \[\] \(asked: \[memoh-test\.example\/dev=null0\]\)/);
    return true;
  });
  const row = await fx.store.getContainerByBot(bot);
  assert.equal(row?.image, fx.images.busybox);
  assert.deepEqual(row?.cdiDevices, []);
  const same = await m.ensure(bot, { image: fx.images.busybox, cdiDevices: [] });
  assert.equal(same.pid, ws.pid, "asking again for the same workspace restarted it");
  await m.delete(bot);
});

test("host file layout: the socket dir is created 0750 and removed with the workspace", async () => {
  const bot = fx.botName("dir");
  await mgr.ensure(bot);
  const dir = path.join(fx.dataRoot, "run", bot);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o750);
  await mgr.delete(bot);
  assert.equal(fs.existsSync(dir), false);
});
