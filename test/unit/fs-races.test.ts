// DeleteFile while something else changes the same files: another process
// moving a directory out of a tree being deleted.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { Status } from "../../proto/rpc.js";
import { removeTree } from "../../agent/fs/delete.js";
import { FsPath } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith } from "./helpers/fs.js";

let t: TestAgent;
const at = (rel: string) => path.join(t.dataDir, rel);
const p = (rel: string) => FsPath.fromText(at(rel));

before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

// ---------------------------------------------------------------- DeleteFile

test("a recursive delete stops with ABORTED when a directory it is in is moved out of the tree, and deletes nothing outside it", async () => {
  // race-del/tmp is deleted; race-del/keep* are its neighbours and must survive.
  await fs.mkdir(at("race-del/tmp/a/b/c"), { recursive: true });
  await fs.writeFile(at("race-del/tmp/a/b/f1"), "1");
  await fs.writeFile(at("race-del/tmp/a/b/c/f2"), "2");
  await fs.writeFile(at("race-del/tmp/a/sibling"), "s");
  await fs.writeFile(at("race-del/keep.txt"), "keep");
  await fs.mkdir(at("race-del/keep-dir"));
  await fs.writeFile(at("race-del/keep-dir/precious"), "precious");

  const entered: string[] = [];
  const err = await rejectsWith(
    removeTree(p("race-del/tmp"), {
      onEnter: async (shown) => {
        entered.push(shown);
        // As `mv race-del/tmp/a/b race-del/` by another process while the walk is inside b.
        if (shown.endsWith("/tmp/a/b")) await fs.rename(at("race-del/tmp/a/b"), at("race-del/b"));
      },
    }),
    Status.ABORTED,
    /the tree changed while it was deleted: .*\/tmp\/a\/b is no longer in .*\/tmp\/a/,
  );
  assert.ok(entered.some((s) => s.endsWith("/tmp/a/b")), `the walk went into b: ${entered.join(", ")} (${err.message})`);

  assert.equal(await fs.readFile(at("race-del/keep.txt"), "utf8"), "keep");
  assert.equal(await fs.readFile(at("race-del/keep-dir/precious"), "utf8"), "precious");
  assert.ok((await fs.stat(at("race-del/b"))).isDirectory(), "the moved directory itself stays where it was moved to");
  assert.ok((await fs.stat(at("race-del/tmp/a"))).isDirectory(), "the walk stopped before going on in a");
  assert.deepEqual((await fs.readdir(at("race-del"))).sort(), ["b", "keep-dir", "keep.txt", "tmp"]);
});

test("a recursive delete whose directories stay put removes the whole tree, calling onEnter for each directory", async () => {
  await fs.mkdir(at("race-del2/x/y"), { recursive: true });
  await fs.mkdir(at("race-del2/z"));
  await fs.writeFile(at("race-del2/x/y/f"), "f");
  const entered: string[] = [];
  await removeTree(p("race-del2"), { onEnter: (shown) => void entered.push(shown.slice(t.dataDir.length + 1)) });
  assert.equal(existsSync(at("race-del2")), false);
  assert.deepEqual(entered.sort(), ["race-del2/x", "race-del2/x/y", "race-del2/z"]);
});

test("a recursive delete still removes the whole tree when a directory it is in is renamed within the tree", async () => {
  await fs.mkdir(at("race-del3/a/b"), { recursive: true });
  await fs.writeFile(at("race-del3/a/b/f"), "f");
  await removeTree(p("race-del3"), {
    onEnter: async (shown) => {
      if (shown.endsWith("/a/b")) await fs.rename(at("race-del3/a/b"), at("race-del3/a/b2"));
    },
  });
  assert.equal(existsSync(at("race-del3")), false);
});
