// A recursive walk is bounded by the bytes of the paths it collects, not only
// by their number: deep trees of long names cannot make one ListDir hold
// hundreds of megabytes.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { walkTree } from "../../agent/fs/list.js";
import { FsPath } from "../../agent/paths.js";
import { LIST_WALK_CAP } from "../../agent/limits.js";
import { Status, rpcCode } from "../../proto/rpc.js";

test("a recursive walk that collects more bytes of paths than its cap is RESOURCE_EXHAUSTED, saying how to narrow it", async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-walk-bytes-"));
  try {
    // 12 levels of 200-byte names, 3 files at each level: few entries, long paths.
    let dir = root;
    for (let level = 0; level < 12; level++) {
      dir = path.join(dir, `${"d".repeat(197)}${String(level).padStart(3, "0")}`);
      await fs.mkdir(dir);
      for (let f = 0; f < 3; f++) await fs.writeFile(path.join(dir, `file-${f}`), "");
    }
    const whole = await walkTree(FsPath.fromText(root), 0, LIST_WALK_CAP);
    assert.equal(whole.found.length, 48);
    const pathBytes = whole.found.reduce((n, rel) => n + rel.length, 0);
    await assert.rejects(walkTree(FsPath.fromText(root), 0, LIST_WALK_CAP, pathBytes - 1), (err) => {
      assert.equal(rpcCode(err), Status.RESOURCE_EXHAUSTED);
      assert.match((err as Error).message, /collects more than \d+ bytes of paths .*lower max_depth, list a subdirectory, or list without recursive/);
      return true;
    });
    assert.equal((await walkTree(FsPath.fromText(root), 0, LIST_WALK_CAP, pathBytes)).found.length, 48);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
});
