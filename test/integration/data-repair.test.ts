// Data operations cut short, repaired on every path that starts a workspace again: the
// manager in this process against a private containerd, real CNI plugins (own bridge
// and /24) and the real store (PostgreSQL on 127.0.0.1, a private schema per run): the
// workspace fixture of env/workspace.ts.
//
// A crash in the middle of an import is left the way the orchestrator's death leaves it
// (cutShortImport: the task paused, the row still "running", the journal written, half of
// /data moved aside), without killing this process: then a call's revive, the
// supervisor, the watchdog and reconcile each find it. A version whose rows failed after
// its commit is made with a store that refuses the rows once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Writable } from "node:stream";
import type { ContainerdClient } from "../../host/containerd/client.js";
import type { SqlStore } from "../../host/store/store.js";
import type { Store } from "../../host/store/types.js";
import { WorkspaceContext, lockKey } from "../../host/workspace/context.js";
import { WorkspaceError } from "../../host/workspace/errors.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { WorkspaceSupervisor, type SupervisorEvent } from "../../host/workspace/supervisor.js";
import { journalPath, mountRootfs, pauseTask, rootfsOf, writeJournal } from "../../host/data/workspace-fs.js";
import { startWorkspaceFixture, type WorkspaceFixture } from "./env/workspace.js";

let fx: WorkspaceFixture;
let cd: ContainerdClient;
let store: SqlStore;
let mgr: WorkspaceManager;
let dataRoot: string;

function newManager(withStore: Store = store): WorkspaceManager {
  return fx.manager({ store: withStore });
}

before(async () => {
  fx = await startWorkspaceFixture();
  ({ cd, store, dataRoot } = fx);
  mgr = newManager();
});

after(async () => {
  await fx?.close();
});

const botName = (name: string) => fx.botName(name);

async function sh(m: WorkspaceManager, bot: string, command: string): Promise<string> {
  const r = await m.call(bot, (c) => c.exec({ command }, { timeoutMs: 30_000 }));
  assert.equal(r.code, 0, `${command}\n${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** /data as the workspace sees it (every entry, and every file's content), and whether a staging dir is left at /. */
const TREE = `cd /data && find . -mindepth 1 | sort | while IFS= read -r f; do if [ -f "$f" ]; then echo "$f $(cat "$f")"; else echo "$f"; fi; done; ls -a / | grep memoh-import || true`;
const OLD_TREE = "./d1\n./d1/f old1\n./d2\n./d2/f old2\n./f3 old3\n";
const NEW_TREE = "./n1\n./n1/f new1\n./n2 new2\n";

/** A workspace whose /data holds d1/f, d2/f and f3. */
async function workspaceWithData(bot: string, opts: { autoStart?: boolean } = {}): Promise<string> {
  const st = await mgr.ensure(bot, opts);
  await sh(mgr, bot, "mkdir /data/d1 /data/d2 && echo old1 > /data/d1/f && echo old2 > /data/d2/f && echo old3 > /data/f3");
  assert.equal(await sh(mgr, bot, TREE), OLD_TREE);
  return st.containerId;
}

/**
 * What the orchestrator's death in the middle of an import leaves (import.ts): the
 * journal, the task paused with the row still "running", the archive staged in
 * /.memoh-import/new and, in phase "out", d1 moved to /.memoh-import/old (d2 and f3 not
 * yet); in phase "in", all of /data moved out and n1 moved in (n2 not yet). Built under
 * the bot's lock, as the operation itself held it.
 */
async function cutShortImport(bot: string, containerId: string, phase: "out" | "in", extra?: (data: string) => void): Promise<void> {
  const ctx = new WorkspaceContext(mgr.options, mgr.bridges);
  await mgr.lock.run(lockKey(bot), async () => {
    writeJournal(ctx, { op: "import", botId: bot, containerId, startedAt: new Date().toISOString() });
    await pauseTask(ctx, bot, containerId);
    const { key, snapshotter } = await rootfsOf(ctx, containerId);
    const m = await mountRootfs(ctx, bot, key, snapshotter, true);
    try {
      const base = path.join(m.root, ".memoh-import");
      const next = path.join(base, "new");
      const old = path.join(base, "old");
      fs.mkdirSync(path.join(next, "n1"), { recursive: true });
      fs.writeFileSync(path.join(next, "n1", "f"), "new1\n");
      fs.writeFileSync(path.join(next, "n2"), "new2\n");
      fs.mkdirSync(old);
      fs.writeFileSync(path.join(base, "state"), "out");
      fs.renameSync(path.join(m.data, "d1"), path.join(old, "d1"));
      if (phase === "in") {
        for (const name of ["d2", "f3"]) fs.renameSync(path.join(m.data, name), path.join(old, name));
        fs.writeFileSync(path.join(base, "state"), "in");
        fs.renameSync(path.join(next, "n1"), path.join(m.data, "n1"));
      }
      extra?.(m.data);
    } finally {
      await m.release();
    }
  });
  assert.equal((await store.getContainerByBot(bot))?.status, "running");
  assert.equal(await cd.tasks.status(containerId), undefined);
  assert.ok(fs.existsSync(journalPath(ctx, bot)));
}

function journalLeft(bot: string): boolean {
  return fs.existsSync(path.join(dataRoot, "data-ops", `${bot}.json`));
}

async function eventTypes(containerId: string): Promise<string[]> {
  return (await store.listEvents(containerId, 200)).map((e) => e.eventType).reverse();
}

/** The repair was recorded before the task was started again. */
async function assertRepairedBeforeStart(containerId: string, outcome: string): Promise<void> {
  const events = await store.listEvents(containerId, 200);
  const repaired = events.findIndex((e) => e.eventType === "data_op_repaired");
  assert.ok(repaired >= 0, `no repair recorded: ${(await eventTypes(containerId)).join(",")}`);
  assert.equal((events[repaired]!.payload as { outcome?: string }).outcome, outcome);
  // Newest first: a start after the repair comes before it in the list.
  const started = events.findIndex((e) => e.eventType === "started");
  assert.ok(started >= 0 && started < repaired, `the task was not started after the repair: ${(await eventTypes(containerId)).join(",")}`);
}

async function waitFor(what: string, ms: number, cond: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; manager log:\n${fx.logs.slice(-20).join("\n")}`);
    await sleep(100);
  }
}

test("an import cut short in its move out: the first call finds the agent gone, and /data is back as before the import when the revived task runs", async () => {
  const bot = botName("revive");
  const id = await workspaceWithData(bot);
  await cutShortImport(bot, id, "out");
  // A read-only call: it is run again once the agent is back.
  assert.equal(await sh(mgr, bot, TREE), OLD_TREE, "the revived workspace runs on a half-swapped /data");
  assert.equal(journalLeft(bot), false, "the journal is left");
  assert.ok((await eventTypes(id)).includes("agent_unavailable"), "the call did not revive the agent");
  await assertRepairedBeforeStart(id, "before");
  await mgr.delete(bot);
});

test("an import cut short in its move in: the supervisor restarts the workspace with the import completed", async () => {
  const bot = botName("restart");
  const id = await workspaceWithData(bot);
  await cutShortImport(bot, id, "in");
  const events: SupervisorEvent[] = [];
  // Only the watchdog can see this exit (it happened before the supervisor subscribed).
  const sup = new WorkspaceSupervisor(mgr, cd.conn, { probeIntervalMs: 300, restartDelayMs: 50, onEvent: (e) => events.push(e) });
  sup.start();
  try {
    await waitFor("the restart", 30_000, () => events.some((e) => e.type === "restarted" && e.containerId === id));
    assert.ok(!events.some((e) => e.type === "restart_failed"), JSON.stringify(events));
    assert.equal(await sh(mgr, bot, TREE), NEW_TREE, "the restarted workspace does not have the imported /data");
    assert.equal(journalLeft(bot), false, "the journal is left");
    await assertRepairedBeforeStart(id, "after");
  } finally {
    await sup.close();
  }
  await mgr.delete(bot);
});

test("an import cut short while its task runs anyway: the watchdog's restart of the deaf agent repairs /data before the new task", async () => {
  const bot = botName("deaf");
  const id = await workspaceWithData(bot);
  await cutShortImport(bot, id, "out");
  // Started behind the manager's back (as an orchestrator without the repair on every
  // start did), on the half-swapped /data; then its agent hangs.
  const pid = await cd.createTask(id, { logPath: path.join(dataRoot, "logs", `${id}.log`) });
  await cd.tasks.start(id);
  let agentPid = 0;
  await waitFor("the agent under tini", 10_000, () => {
    agentPid = Number(fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/)[0] || 0);
    return agentPid > 0 && fs.existsSync(mgr.socketPath(bot));
  });
  process.kill(agentPid, "SIGSTOP");
  assert.equal(await mgr.restartUnresponsive(bot, 1_000), "restarted");
  assert.notEqual((await mgr.status(bot)).pid, pid);
  assert.equal(await sh(mgr, bot, TREE), OLD_TREE, "the restarted workspace runs on a half-swapped /data");
  assert.equal(journalLeft(bot), false);
  await assertRepairedBeforeStart(id, "before");
  await mgr.delete(bot);
});

test("reconcile repairs the import cut short of a workspace without auto-start, and does not start it", async () => {
  const bot = botName("manual");
  const id = await workspaceWithData(bot, { autoStart: false });
  await cutShortImport(bot, id, "out");
  const report = await mgr.reconcile();
  assert.deepEqual(
    report.filter((e) => e.botId === bot),
    [{ botId: bot, containerId: id, action: "repaired" }],
  );
  assert.equal(journalLeft(bot), false, "reconcile left the journal");
  assert.equal(await cd.tasks.status(id), undefined, "reconcile started a workspace without auto-start");
  assert.ok((await eventTypes(id)).includes("data_op_repaired"));
  // Nothing left to repair: the next sweep does not visit it.
  assert.deepEqual((await mgr.reconcile()).filter((e) => e.botId === bot), []);
  await mgr.start(bot);
  assert.equal(await sh(mgr, bot, TREE), OLD_TREE);
  await mgr.delete(bot);
});

test("a repair that would replace what the workspace wrote on a half-swapped /data is refused whole: no start, nothing moved, a plain delete still works", async () => {
  const bot = botName("clash");
  const id = await workspaceWithData(bot);
  // As if the workspace had run on the half-swapped /data and made d1 again.
  await cutShortImport(bot, id, "out", (data) => {
    fs.mkdirSync(path.join(data, "d1"));
    fs.writeFileSync(path.join(data, "d1", "made-after"), "keep me\n");
  });
  const refused = (err: unknown) => {
    assert.ok(err instanceof WorkspaceError, String(err));
    assert.equal(err.code, "conflict");
    assert.match(err.message, /cannot be repaired without replacing data: \/data holds "d1"/);
    return true;
  };
  await assert.rejects(mgr.start(bot), refused);
  await assert.rejects(mgr.restartAfterExit(id, { exitStatus: 137 }), refused);
  await assert.rejects(mgr.call(bot, (c) => c.info()), refused);
  assert.equal(await cd.tasks.status(id), undefined, "a task was started");
  assert.equal(journalLeft(bot), true, "the journal of the unrepaired swap is gone");
  // Both d1 are still there: the one moved aside and the one made after.
  const ctx = new WorkspaceContext(mgr.options, mgr.bridges);
  const { key, snapshotter } = await rootfsOf(ctx, id);
  const m = await mountRootfs(ctx, bot, key, snapshotter, false);
  try {
    assert.equal(fs.readFileSync(path.join(m.root, ".memoh-import", "old", "d1", "f"), "utf8"), "old1\n");
    assert.equal(fs.readFileSync(path.join(m.data, "d1", "made-after"), "utf8"), "keep me\n");
    assert.deepEqual(fs.readdirSync(m.data).sort(), ["d1", "d2", "f3"]);
  } finally {
    await m.release();
  }
  await mgr.delete(bot);
  assert.equal(await store.getContainerByBot(bot), undefined);
  assert.equal(journalLeft(bot), false, "the deleted workspace's journal is left");
});

test("a version whose rows failed after its commit: the next operation records them without stopping the running task", async () => {
  let failRows = 0;
  const flaky = new Proxy(store, {
    get(target, prop) {
      if (prop === "recordVersion" && failRows > 0) {
        failRows--;
        return async () => {
          throw new Error("injected: the version rows could not be written");
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const m = newManager(flaky);
  const bot = botName("rows");
  try {
    await m.ensure(bot);
    await sh(m, bot, "echo v1 > /data/v");
    failRows = 1;
    await assert.rejects(m.createVersion(bot, { displayName: "cut" }), /injected/);
    // Committed and running on the new active rootfs; only the rows are missing.
    const running = await m.status(bot);
    assert.equal(running.task, "running");
    assert.equal(journalLeft(bot), true, "the journal of the committed version is gone");
    assert.deepEqual((await m.listVersions(bot)).versions, []);
    await sh(m, bot, "echo busy > /data/during");

    // An unrelated operation: an export of the running workspace.
    let exported = 0;
    await m.exportData(
      bot,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          exported += chunk.byteLength;
          cb();
        },
      }),
    );
    assert.ok(exported > 0);
    const after = await m.status(bot);
    assert.equal(after.task, "running", "the repair stopped the running task");
    assert.equal(after.pid, running.pid, "the repair restarted the task");
    assert.equal(journalLeft(bot), false);
    const versions = (await m.listVersions(bot)).versions;
    assert.deepEqual(
      versions.map((v) => [v.version, v.displayName]),
      [[1, "cut"]],
    );
    assert.equal(await sh(m, bot, "cat /data/v /data/during"), "v1\nbusy\n");
    await m.rollback(bot, 1);
    assert.equal(await sh(m, bot, "cat /data/v; ls /data"), "v1\nv\n", "version 1 is not the state it was committed with");
  } finally {
    await m.delete(bot).catch(() => undefined);
    await m.close();
  }
});
