// Trees deeper than PATH_MAX (4096 bytes): no system call takes their full
// paths, so the test builds them step by step relative to an open directory
// (/proc/self/fd/<fd>/<name>, openat-style), and the agent must list and
// delete them without ever naming the deep part by its full path.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { constants, existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService, FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { PATH_MAX_BYTES } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";

const m = ContainerService.method;
const LEVEL = "d".repeat(250);
const LEVELS = 24; // 24 × 251 bytes ≈ 6 KB below the tree's top
let t: TestAgent;

before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

/**
 * top/LEVEL/LEVEL/… `levels` deep; every level holds a file `f<i>`, the
 * deepest one `leaf.txt` and a symlink to `outside`. Returns the relative
 * paths of everything created, '/'-separated.
 */
async function buildDeepTree(top: string, levels: number, outside: string): Promise<string[]> {
  const created: string[] = [];
  await fs.mkdir(top);
  let dir = await fs.open(top, constants.O_RDONLY | constants.O_DIRECTORY);
  let rel = "";
  try {
    for (let i = 0; i < levels; i++) {
      await fs.writeFile(`/proc/self/fd/${dir.fd}/f${i}`, "x");
      created.push(`${rel}f${i}`);
      await fs.mkdir(`/proc/self/fd/${dir.fd}/${LEVEL}`);
      created.push(`${rel}${LEVEL}`);
      const child = await fs.open(`/proc/self/fd/${dir.fd}/${LEVEL}`, constants.O_RDONLY | constants.O_DIRECTORY);
      await dir.close();
      dir = child;
      rel += `${LEVEL}/`;
    }
    await fs.writeFile(`/proc/self/fd/${dir.fd}/leaf.txt`, "leaf");
    created.push(`${rel}leaf.txt`);
    await fs.symlink(outside, `/proc/self/fd/${dir.fd}/escape`);
    created.push(`${rel}escape`);
  } finally {
    await dir.close();
  }
  return created;
}

test("a tree deeper than PATH_MAX is listed recursively: the deep part is flagged, not an error for the call", async () => {
  const outside = path.join(t.root, "outside");
  await fs.mkdir(outside);
  const top = path.join(t.dataDir, "deep-list");
  const created = await buildDeepTree(top, LEVELS, outside);
  const fits = (rel: string) => Buffer.byteLength(top) + 1 + Buffer.byteLength(rel) <= PATH_MAX_BYTES;
  const parentFits = (rel: string) => !rel.includes("/") || fits(rel.slice(0, rel.lastIndexOf("/")));

  const res = await t.client.unary(m.listDir, { path: "deep-list", recursive: true, limit: 10_000 });
  // Listed: everything whose directory could be read, i.e. whose parent's path fits.
  const expected = created.filter(parentFits).sort();
  assert.deepEqual(res.entries.map((e) => e.path), expected);
  assert.equal(res.total, expected.length);
  assert.ok(created.length > expected.length, "the tree does go deeper than what can be listed");

  const flagged = res.entries.filter((e) => e.pathTooLong);
  assert.ok(flagged.some((e) => e.type === FileType.DIRECTORY), "the first directory past PATH_MAX is reported");
  for (const e of res.entries) {
    assert.equal(e.pathTooLong, !fits(e.path), e.path.slice(-40));
    if (e.pathTooLong) {
      assert.equal(e.name, e.path.slice(e.path.lastIndexOf("/") + 1));
      assert.equal(e.mtimeMs, 0n, "no lstat could reach it");
    } else if (e.type === FileType.FILE) {
      assert.equal(e.size, 1n);
    }
  }
  for (const f of flagged) {
    assert.ok(!res.entries.some((e) => e.path.startsWith(`${f.path}/`)), "nothing below a flagged entry is listed");
  }
  // (fs.rm cannot remove it: the test's own cleanup would fail.)
  await t.client.unary(m.deleteFile, { path: "deep-list", recursive: true });
});

test("DeleteFile with recursive removes a tree deeper than PATH_MAX and never follows its symlinks", async () => {
  const outside = path.join(t.root, "outside-del");
  await fs.mkdir(outside);
  await fs.writeFile(path.join(outside, "precious"), "keep");
  const top = path.join(t.dataDir, "deep-del");
  await buildDeepTree(top, LEVELS, outside);
  await fs.symlink(outside, path.join(top, "shallow-escape"));

  await t.client.unary(m.deleteFile, { path: "deep-del", recursive: true });
  assert.equal(existsSync(top), false);
  assert.equal(await fs.readFile(path.join(outside, "precious"), "utf8"), "keep");
  assert.deepEqual(await fs.readdir(t.dataDir).then((names) => names.filter((n) => n.startsWith("deep-del"))), []);
});

test("Rename moves a deep tree's top by its short path, and the moved tree can still be deleted", async () => {
  const top = path.join(t.dataDir, "deep-mv");
  await buildDeepTree(top, LEVELS, "/nowhere");
  await t.client.unary(m.rename, { from: "deep-mv", to: "deep-mv-renamed" });
  assert.equal(existsSync(top), false);
  await t.client.unary(m.deleteFile, { path: "deep-mv-renamed", recursive: true });
  assert.equal(existsSync(path.join(t.dataDir, "deep-mv-renamed")), false);
});
