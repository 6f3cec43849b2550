// Workspaces against real daemons under what users' images and workloads bring: task
// logs that grow and lifecycle histories that get long.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { startWorkspaceFixture, type WorkspaceFixture } from "./env/workspace.js";

let fx: WorkspaceFixture;
let mgr: WorkspaceManager;

before(async () => {
  fx = await startWorkspaceFixture();
  mgr = fx.manager();
});

after(async () => {
  await fx?.close();
});

test("maintenance caps a task log that grew and prunes lifecycle events to the newest N", async () => {
  const bot = fx.botName("logs");
  const ws = await mgr.ensure(bot);
  const log = path.join(fx.dataRoot, "logs", `${ws.containerId}.log`);
  assert.ok(fs.existsSync(log), "the task has no log file");
  // What a chatty workspace leaves behind: 64 KiB of old output.
  fs.appendFileSync(log, "old output line\n".repeat(4096));
  for (let i = 0; i < 30; i++) await fx.store.recordEvent(ws.containerId, "test_event", { i });
  const report = await mgr.maintain({ taskLogMaxBytes: 16 * 1024, taskLogKeep: 1, eventsKeep: 10 });
  assert.deepEqual(report.errors, []);
  assert.ok(report.logsRotated.includes(log), JSON.stringify(report));
  assert.ok(fs.statSync(log).size < 16 * 1024, "the log was not truncated");
  assert.match(fs.readFileSync(`${log}.1`, "utf8"), /old output line/);
  assert.equal(fs.existsSync(`${log}.2`), false, "more rotated copies than asked for");
  assert.ok(report.eventsPruned >= 20, `pruned ${report.eventsPruned}`);
  assert.equal((await fx.store.listEvents(ws.containerId, 100)).length, 10);
  await mgr.delete(bot);
});
