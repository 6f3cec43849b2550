// DeleteFile and Rename while something else changes the same files: another
// process moving a directory out of a tree being deleted, Renames racing for
// one destination, a destination created between the check and the move.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { removeTree } from "../../agent/fs/delete.js";
import { moveNoReplace, renameOntoPlaceholder } from "../../agent/fs/no-replace.js";
import { moveAcrossDevices } from "../../agent/fs/rename.js";
import { FsPath } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith, tempFilesIn } from "./helpers/fs.js";

const m = ContainerService.method;
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

// ---------------------------------------------------------------- Rename without overwrite

test("concurrent Renames of two files onto one new path without overwrite: one wins, the other is ALREADY_EXISTS, nothing is lost", async () => {
  const N = 40;
  await fs.mkdir(at("race-mv"));
  for (let i = 0; i < N; i++) {
    await fs.writeFile(at(`race-mv/a${i}`), `A${i}`);
    await fs.writeFile(at(`race-mv/b${i}`), `B${i}`);
  }
  const calls = [];
  for (let i = 0; i < N; i++) {
    calls.push(t.client.unary(m.rename, { from: `race-mv/a${i}`, to: `race-mv/c${i}` }));
    calls.push(t.client.unary(m.rename, { from: `race-mv/b${i}`, to: `race-mv/c${i}` }));
  }
  const results = await Promise.allSettled(calls);
  for (let i = 0; i < N; i++) {
    const [a, b] = [results[2 * i], results[2 * i + 1]];
    assert.equal([a, b].filter((r) => r.status === "fulfilled").length, 1, `pair ${i}: exactly one Rename succeeds`);
    const lost = (a.status === "rejected" ? a : b) as PromiseRejectedResult;
    await rejectsWith(Promise.reject(lost.reason), Status.ALREADY_EXISTS, new RegExp(`to: .*race-mv/c${i} already exists; set overwrite to replace it`));
    const [winner, loser] = a.status === "fulfilled" ? ["A", "b"] : ["B", "a"];
    assert.equal(await fs.readFile(at(`race-mv/c${i}`), "utf8"), `${winner}${i}`);
    assert.equal(await fs.readFile(at(`race-mv/${loser}${i}`), "utf8"), `${loser.toUpperCase()}${i}`, "the losing source is untouched");
  }
  assert.equal((await fs.readdir(at("race-mv"))).length, 2 * N, "no leftovers: N destinations and N losing sources");
});

test("concurrent Renames of two directories onto one new path without overwrite: one wins, the other is ALREADY_EXISTS", async () => {
  const N = 20;
  for (let i = 0; i < N; i++) {
    for (const s of ["a", "b"]) {
      await fs.mkdir(at(`race-mvd/${s}${i}`), { recursive: true });
      await fs.writeFile(at(`race-mvd/${s}${i}/f`), `${s}${i}`);
    }
  }
  const calls = [];
  for (let i = 0; i < N; i++) {
    calls.push(t.client.unary(m.rename, { from: `race-mvd/a${i}`, to: `race-mvd/c${i}` }));
    calls.push(t.client.unary(m.rename, { from: `race-mvd/b${i}`, to: `race-mvd/c${i}` }));
  }
  const results = await Promise.allSettled(calls);
  for (let i = 0; i < N; i++) {
    const [a, b] = [results[2 * i], results[2 * i + 1]];
    assert.equal([a, b].filter((r) => r.status === "fulfilled").length, 1, `pair ${i}: exactly one Rename succeeds`);
    const lost = (a.status === "rejected" ? a : b) as PromiseRejectedResult;
    await rejectsWith(Promise.reject(lost.reason), Status.ALREADY_EXISTS, /already exists; set overwrite/);
    const [winner, loser] = a.status === "fulfilled" ? ["a", "b"] : ["b", "a"];
    assert.deepEqual(await fs.readdir(at(`race-mvd/c${i}`)), ["f"]);
    assert.equal(await fs.readFile(at(`race-mvd/c${i}/f`), "utf8"), `${winner}${i}`);
    assert.equal(await fs.readFile(at(`race-mvd/${loser}${i}/f`), "utf8"), `${loser}${i}`);
  }
});

test("concurrent Renames of one file to two new paths: it ends at exactly one of them, the other call is NOT_FOUND", async () => {
  const N = 30;
  await fs.mkdir(at("race-src"));
  for (let i = 0; i < N; i++) await fs.writeFile(at(`race-src/s${i}`), `S${i}`);
  const calls = [];
  for (let i = 0; i < N; i++) {
    calls.push(t.client.unary(m.rename, { from: `race-src/s${i}`, to: `race-src/x${i}` }));
    calls.push(t.client.unary(m.rename, { from: `race-src/s${i}`, to: `race-src/y${i}` }));
  }
  const results = await Promise.allSettled(calls);
  for (let i = 0; i < N; i++) {
    const [x, y] = [results[2 * i], results[2 * i + 1]];
    assert.equal([x, y].filter((r) => r.status === "fulfilled").length, 1, `pair ${i}: exactly one Rename succeeds`);
    const lost = (x.status === "rejected" ? x : y) as PromiseRejectedResult;
    await rejectsWith(Promise.reject(lost.reason), Status.NOT_FOUND);
    const names = (await fs.readdir(at("race-src"))).filter((n) => n.slice(1) === String(i));
    assert.deepEqual(names, [x.status === "fulfilled" ? `x${i}` : `y${i}`]);
    assert.equal(await fs.readFile(at(`race-src/${names[0]}`), "utf8"), `S${i}`);
  }
});

test("a move without overwrite refuses a destination that appeared after Rename's check: file, symlink, directory", async () => {
  await fs.mkdir(at("late/dir-src"), { recursive: true });
  await fs.writeFile(at("late/dir-src/f"), "d");
  await fs.writeFile(at("late/file-src"), "mine");
  await fs.symlink("file-src", at("late/link-src"));
  await fs.writeFile(at("late/theirs"), "theirs");
  await fs.mkdir(at("late/their-dir"));
  await fs.writeFile(at("late/their-dir/g"), "g");
  await fs.mkdir(at("late/their-empty-dir"));

  for (const [from, to] of [
    ["file-src", "theirs"],
    ["link-src", "theirs"],
    ["dir-src", "theirs"],
    ["file-src", "their-dir"],
    ["dir-src", "their-dir"],
    ["dir-src", "their-empty-dir"],
  ]) {
    await rejectsWith(moveNoReplace(p(`late/${from}`), p(`late/${to}`)), Status.ALREADY_EXISTS, new RegExp(`to: .*late/${to} already exists`));
  }
  for (const kind of ["file", "directory"] as const) {
    await rejectsWith(renameOntoPlaceholder(p("late/file-src"), p("late/theirs"), kind), Status.ALREADY_EXISTS);
  }
  assert.equal(await fs.readFile(at("late/theirs"), "utf8"), "theirs");
  assert.equal(await fs.readFile(at("late/their-dir/g"), "utf8"), "g");
  assert.deepEqual(await fs.readdir(at("late/their-empty-dir")), []);
  assert.equal(await fs.readFile(at("late/file-src"), "utf8"), "mine");
  assert.equal(await fs.readlink(at("late/link-src")), "file-src");
  assert.equal(await fs.readFile(at("late/dir-src/f"), "utf8"), "d");
  assert.deepEqual((await fs.readdir(at("late"))).sort(), ["dir-src", "file-src", "link-src", "their-dir", "their-empty-dir", "theirs"]);
});

test("a move without overwrite moves a symlink (dangling too) as a link, and a file with one name", async () => {
  await fs.mkdir(at("nr"));
  await fs.writeFile(at("nr/target"), "t");
  await fs.symlink("target", at("nr/link"));
  await fs.symlink("nowhere", at("nr/dangling"));
  await fs.writeFile(at("nr/file"), "f");
  await t.client.unary(m.rename, { from: "nr/link", to: "nr/sub/link" });
  await t.client.unary(m.rename, { from: "nr/dangling", to: "nr/sub/dangling" });
  await t.client.unary(m.rename, { from: "nr/file", to: "nr/sub/file" });
  assert.equal(await fs.readlink(at("nr/sub/link")), "target");
  assert.equal(await fs.readlink(at("nr/sub/dangling")), "nowhere");
  const moved = await fs.lstat(at("nr/sub/file"));
  assert.equal(moved.nlink, 1, "the old name is gone, not left as a second link");
  assert.equal((await fs.lstat(at("nr/target"))).nlink, 1, "the symlink's target is not linked");
  assert.deepEqual((await fs.readdir(at("nr"))).sort(), ["sub", "target"]);
});

test("where no hard link can be made, a file is moved onto an exclusive placeholder", async () => {
  await fs.mkdir(at("ph"));
  await fs.writeFile(at("ph/file"), "f");
  await fs.chmod(at("ph/file"), 0o640);
  await fs.symlink("file", at("ph/link"));
  await renameOntoPlaceholder(p("ph/file"), p("ph/file2"), "file");
  await renameOntoPlaceholder(p("ph/link"), p("ph/link2"), "file");
  assert.equal(await fs.readFile(at("ph/file2"), "utf8"), "f");
  assert.equal((await fs.stat(at("ph/file2"))).mode & 0o7777, 0o640, "the file itself, not the placeholder");
  assert.equal(await fs.readlink(at("ph/link2")), "file");
  assert.deepEqual((await fs.readdir(at("ph"))).sort(), ["file2", "link2"]);
  // A rename that fails takes its placeholder back.
  await assert.rejects(renameOntoPlaceholder(p("ph/missing"), p("ph/nope"), "file"), { code: "ENOENT" });
  await assert.rejects(renameOntoPlaceholder(p("ph/missing"), p("ph/nope"), "directory"), { code: "ENOENT" });
  assert.deepEqual((await fs.readdir(at("ph"))).sort(), ["file2", "link2"]);
});

test("a cross-device move without overwrite refuses a destination created during the copy and keeps the source", async () => {
  const shm = await fs.mkdtemp("/dev/shm/memoh-race-");
  try {
    await fs.mkdir(path.join(shm, "tree/sub"), { recursive: true });
    await fs.writeFile(path.join(shm, "tree/sub/f"), "src");
    await fs.writeFile(path.join(shm, "file"), "src-file");
    await fs.mkdir(at("xrace"));
    await fs.writeFile(at("xrace/tree"), "theirs");
    await fs.writeFile(at("xrace/file"), "theirs too");
    for (const name of ["tree", "file"]) {
      await rejectsWith(
        moveAcrossDevices(FsPath.fromText(path.join(shm, name)), p(`xrace/${name}`), { overwrite: false }),
        Status.ALREADY_EXISTS,
        new RegExp(`to: .*xrace/${name} already exists`),
      );
    }
    assert.equal(await fs.readFile(at("xrace/tree"), "utf8"), "theirs");
    assert.equal(await fs.readFile(at("xrace/file"), "utf8"), "theirs too");
    assert.equal(await fs.readFile(path.join(shm, "tree/sub/f"), "utf8"), "src");
    assert.equal(await fs.readFile(path.join(shm, "file"), "utf8"), "src-file");
    assert.deepEqual(await tempFilesIn(at("xrace")), []);
    // With overwrite the file is replaced; a fresh path is taken without it.
    await moveAcrossDevices(FsPath.fromText(path.join(shm, "file")), p("xrace/file"), { overwrite: true });
    assert.equal(await fs.readFile(at("xrace/file"), "utf8"), "src-file");
    await moveAcrossDevices(FsPath.fromText(path.join(shm, "tree")), p("xrace/tree2"));
    assert.equal(await fs.readFile(at("xrace/tree2/sub/f"), "utf8"), "src");
    assert.equal(existsSync(path.join(shm, "tree")), false);
  } finally {
    await fs.rm(shm, { recursive: true, force: true });
  }
});
