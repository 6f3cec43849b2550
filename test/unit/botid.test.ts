import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidBotIdError, botIdProblem, validateBotId, workspaceContainerId, legacyContainerId } from "../../host/workspace/botid.js";
import { KeyedLock, LockAbortedError } from "../../host/workspace/lock.js";

test("valid bot ids pass and map to workspace-<bot> / mcp-<bot>", () => {
  for (const id of ["a", "bot1", "0abc", "my_bot-2", "x".repeat(64)]) assert.equal(validateBotId(id), id);
  assert.equal(workspaceContainerId("bot1"), "workspace-bot1");
  assert.equal(legacyContainerId("bot1"), "mcp-bot1");
});

test("invalid bot ids are refused with a reason", () => {
  const cases: Array<[unknown, RegExp]> = [
    ["../x", /lowercase/],
    ["", /empty/],
    ["a".repeat(300), /longer than 64/],
    ["a\0b", /NUL/],
    ["Bot", /lowercase/],
    ["-x", /starting/],
    ["_x", /starting/],
    ["a/b", /lowercase/],
    ["a.b", /lowercase/],
    ["a b", /lowercase/],
    [".", /lowercase/],
    ["x".repeat(65), /longer/],
    [42, /not a string/],
  ];
  for (const [id, reason] of cases) {
    assert.match(botIdProblem(id) ?? "", reason, `for ${JSON.stringify(id)}`);
    assert.throws(() => validateBotId(id), InvalidBotIdError);
  }
  assert.throws(() => workspaceContainerId("../x"), InvalidBotIdError);
});

test("KeyedLock serialises one key, not different keys", async () => {
  const lock = new KeyedLock();
  const order: string[] = [];
  const step = (name: string, ms: number) => async () => {
    order.push(`${name}+`);
    await new Promise((r) => setTimeout(r, ms));
    order.push(`${name}-`);
    return name;
  };
  const results = await Promise.all([lock.run("a", step("a1", 30)), lock.run("a", step("a2", 1)), lock.run("b", step("b1", 5))]);
  assert.deepEqual(results, ["a1", "a2", "b1"]);
  assert.ok(order.indexOf("a1-") < order.indexOf("a2+"), order.join(" "));
  assert.ok(order.indexOf("b1-") < order.indexOf("a1-"), "key b waited for key a");
  assert.equal(lock.isBusy("a"), false);
});

test("KeyedLock: an aborted caller stops waiting, the work still completes and releases the key", async () => {
  const lock = new KeyedLock();
  const ac = new AbortController();
  let finished = false;
  const p = lock.run(
    "k",
    async () => {
      await new Promise((r) => setTimeout(r, 50));
      finished = true;
    },
    { signal: ac.signal },
  );
  ac.abort();
  await assert.rejects(p, LockAbortedError);
  assert.equal(finished, false);
  await lock.run("k", async () => undefined);
  assert.equal(finished, true, "the next holder ran before the aborted caller's work finished");
});

test("KeyedLock: a failing holder does not block the next", async () => {
  const lock = new KeyedLock();
  await assert.rejects(lock.run("k", async () => { throw new Error("boom"); }), /boom/);
  assert.equal(await lock.run("k", async () => 7), 7);
});
