// ListDir through a real in-process agent: order, depth, symlinks, paging, caps.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, existsSync, openSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService, FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT } from "../../agent/limits.js";
import { walkTree } from "../../agent/fs/list.js";
import { FsPath } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith } from "./helpers/fs.js";

const m = ContainerService.method;
let t: TestAgent;
let tree: string;

// tree/
//   b.txt (3 bytes, 0600)   a-dir/x   a/deep/er/leaf.txt   a/top.txt   link -> a   z/
before(async () => {
  t = await startTestAgent();
  tree = path.join(t.dataDir, "tree");
  await fs.mkdir(path.join(tree, "a/deep/er"), { recursive: true });
  await fs.mkdir(path.join(tree, "a-dir"));
  await fs.mkdir(path.join(tree, "z"));
  await fs.writeFile(path.join(tree, "a/deep/er/leaf.txt"), "leaf");
  await fs.writeFile(path.join(tree, "a/top.txt"), "top");
  await fs.writeFile(path.join(tree, "a-dir/x"), "");
  await fs.writeFile(path.join(tree, "b.txt"), "bbb");
  await fs.chmod(path.join(tree, "b.txt"), 0o600);
  await fs.symlink("a", path.join(tree, "link"));
});
after(async () => {
  await t.close();
});

test("ListDir lists direct children sorted, with type, mode, size and symlink target", async () => {
  const res = await t.client.unary(m.listDir, { path: "tree" });
  assert.deepEqual(res.entries.map((e) => e.path), ["a", "a-dir", "b.txt", "link", "z"]);
  assert.equal(res.total, 5);
  assert.equal(res.hasMore, false);
  const byName = new Map(res.entries.map((e) => [e.name, e]));
  assert.equal(byName.get("a")!.type, FileType.DIRECTORY);
  const b = byName.get("b.txt")!;
  assert.deepEqual([b.type, b.mode, b.size], [FileType.FILE, 0o600, 3n]);
  assert.ok(b.mtimeMs > 0n);
  const link = byName.get("link")!;
  assert.deepEqual([link.type, link.symlinkTarget], [FileType.SYMLINK, "a"]);
});

test("recursive ListDir walks everything with '/' paths and never follows symlinks", async () => {
  const res = await t.client.unary(m.listDir, { path: "tree", recursive: true });
  assert.deepEqual(res.entries.map((e) => e.path), [
    "a",
    "a-dir",
    "a-dir/x",
    "a/deep",
    "a/deep/er",
    "a/deep/er/leaf.txt",
    "a/top.txt",
    "b.txt",
    "link",
    "z",
  ]);
  const leaf = res.entries.find((e) => e.path === "a/deep/er/leaf.txt")!;
  assert.deepEqual([leaf.name, leaf.size], ["leaf.txt", 4n]);
});

test("max_depth limits the levels a recursive listing descends", async () => {
  const one = await t.client.unary(m.listDir, { path: "tree", recursive: true, maxDepth: 1 });
  assert.deepEqual(one.entries.map((e) => e.path), ["a", "a-dir", "b.txt", "link", "z"]);
  const two = await t.client.unary(m.listDir, { path: "tree", recursive: true, maxDepth: 2 });
  assert.deepEqual(two.entries.map((e) => e.path), ["a", "a-dir", "a-dir/x", "a/deep", "a/top.txt", "b.txt", "link", "z"]);
});

test("offset and limit page over the sorted entries with total and has_more", async () => {
  const all = (await t.client.unary(m.listDir, { path: "tree", recursive: true })).entries.map((e) => e.path);
  const pages: string[] = [];
  for (let offset = 0; ; offset += 3) {
    const page = await t.client.unary(m.listDir, { path: "tree", recursive: true, offset, limit: 3 });
    assert.equal(page.total, all.length);
    pages.push(...page.entries.map((e) => e.path));
    assert.equal(page.hasMore, offset + 3 < all.length);
    if (!page.hasMore) break;
  }
  assert.deepEqual(pages, all);
  const past = await t.client.unary(m.listDir, { path: "tree", offset: 50 });
  assert.deepEqual([past.entries.length, past.total, past.hasMore], [0, 5, false]);
});

test("limit 0 means the default page, and pages are capped at LIST_MAX_LIMIT", async (ctx) => {
  // tmpfs when there is one: creating 10k files on a journaling disk takes seconds.
  const scratch = await fs.mkdtemp(path.join(existsSync("/dev/shm") ? "/dev/shm" : t.root, "memoh-list-"));
  try {
    const count = LIST_MAX_LIMIT + 5;
    const names = Array.from({ length: count }, (_, i) => `f${String(i).padStart(5, "0")}`);
    for (const n of names) closeSync(openSync(path.join(scratch, n), "w"));
    const dflt = await t.client.unary(m.listDir, { path: scratch });
    assert.equal(dflt.entries.length, LIST_DEFAULT_LIMIT);
    assert.deepEqual([dflt.total, dflt.hasMore], [count, true]);
    assert.equal(dflt.entries[LIST_DEFAULT_LIMIT - 1]!.name, names[LIST_DEFAULT_LIMIT - 1]);
    const started = Date.now();
    const capped = await t.client.unary(m.listDir, { path: scratch, limit: 1_000_000 });
    ctx.diagnostic(`ListDir of ${LIST_MAX_LIMIT} entries: ${Date.now() - started} ms`);
    assert.equal(capped.entries.length, LIST_MAX_LIMIT);
    assert.equal(capped.hasMore, true);
    assert.deepEqual(capped.entries.map((e) => e.name), names.slice(0, LIST_MAX_LIMIT));
  } finally {
    await fs.rm(scratch, { recursive: true, force: true });
  }
});

test("a walk over the cap is RESOURCE_EXHAUSTED and says how to narrow it", async () => {
  await assert.rejects(walkTree(FsPath.fromText(tree), 0, 6), (err) => {
    assert.equal(rpcCode(err), Status.RESOURCE_EXHAUSTED);
    assert.match((err as Error).message, /more than 6 entries.*max_depth.*subdirectory/);
    return true;
  });
  // The same tree fits when the walk stays shallow.
  assert.equal((await walkTree(FsPath.fromText(tree), 1, 6)).found.length, 5);
});

test("listing a file is FAILED_PRECONDITION; a missing dir is NOT_FOUND; bad paths are INVALID_ARGUMENT", async () => {
  await rejectsWith(t.client.unary(m.listDir, { path: "tree/b.txt" }), Status.FAILED_PRECONDITION, /not a directory/);
  await rejectsWith(t.client.unary(m.listDir, { path: "tree/missing" }), Status.NOT_FOUND, /tree\/missing/);
  await rejectsWith(t.client.unary(m.listDir, { path: "" }), Status.INVALID_ARGUMENT);
  await rejectsWith(t.client.unary(m.listDir, { path: "tree\0" }), Status.INVALID_ARGUMENT);
});

test("an absolute path lists that directory; a symlinked root directory is listed through", async () => {
  const abs = await t.client.unary(m.listDir, { path: path.join(tree, "a") });
  assert.deepEqual(abs.entries.map((e) => e.path), ["deep", "top.txt"]);
  const viaLink = await t.client.unary(m.listDir, { path: "tree/link" });
  assert.deepEqual(viaLink.entries.map((e) => e.path), ["deep", "top.txt"]);
});
