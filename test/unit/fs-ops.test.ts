// Mkdir, Rename and DeleteFile through a real in-process agent.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { moveAcrossDevices } from "../../agent/fs/rename.js";
import { FsPath } from "../../agent/paths.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith, tempFilesIn } from "./helpers/fs.js";

const m = ContainerService.method;
let t: TestAgent;
const at = (rel: string) => path.join(t.dataDir, rel);

before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

// ---------------------------------------------------------------- Mkdir

test("Mkdir with parents creates the chain with mode 0755 and accepts an existing directory", async () => {
  await t.client.unary(m.mkdir, { path: "mk/a/b/c", parents: true });
  assert.ok((await fs.stat(at("mk/a/b/c"))).isDirectory());
  assert.equal((await fs.stat(at("mk/a/b/c"))).mode & 0o7777, 0o755);
  await t.client.unary(m.mkdir, { path: "mk/a/b/c", parents: true });
  await t.client.unary(m.mkdir, { path: "mk/private", mode: 0o700 });
  assert.equal((await fs.stat(at("mk/private"))).mode & 0o7777, 0o700);
  await t.client.unary(m.mkdir, { path: "mk/shared", mode: 0o777 });
  assert.equal((await fs.stat(at("mk/shared"))).mode & 0o7777, 0o777, "not filtered by the umask");
});

test("Mkdir without parents: existing is ALREADY_EXISTS, a missing parent is NOT_FOUND", async () => {
  await fs.mkdir(at("mk2/exists"), { recursive: true });
  await rejectsWith(t.client.unary(m.mkdir, { path: "mk2/exists" }), Status.ALREADY_EXISTS, /already exists/);
  await rejectsWith(t.client.unary(m.mkdir, { path: "mk2/missing/child" }), Status.NOT_FOUND, /parent directory .*mk2\/missing does not exist/);
  assert.equal(existsSync(at("mk2/missing")), false);
});

test("Mkdir over a file is ALREADY_EXISTS saying it is not a directory; under a file is FAILED_PRECONDITION", async () => {
  await fs.mkdir(at("mk3"));
  await fs.writeFile(at("mk3/file"), "x");
  await rejectsWith(t.client.unary(m.mkdir, { path: "mk3/file", parents: true }), Status.ALREADY_EXISTS, /not a directory/);
  await rejectsWith(t.client.unary(m.mkdir, { path: "mk3/file" }), Status.ALREADY_EXISTS, /not a directory/);
  await rejectsWith(t.client.unary(m.mkdir, { path: "mk3/file/sub", parents: true }), Status.FAILED_PRECONDITION, /not a directory/);
  assert.equal(await fs.readFile(at("mk3/file"), "utf8"), "x");
  await rejectsWith(t.client.unary(m.mkdir, { path: "" }), Status.INVALID_ARGUMENT);
});

test("directories under /proc (mkdir says ENOENT there) are refused at once: Mkdir with parents, WriteFile, Rename", async () => {
  // Node's recursive mkdir never called back for these and kept the agent spinning.
  const opts = { timeoutMs: 10_000 };
  await rejectsWith(t.client.unary(m.mkdir, { path: "/proc/memoh-x", parents: true }, opts), Status.FAILED_PRECONDITION, /cannot create \/proc\/memoh-x: the file system there does not allow new directories/);
  await rejectsWith(t.client.unary(m.mkdir, { path: "/proc/memoh-x/y/z", parents: true }, opts), Status.FAILED_PRECONDITION, /does not allow new directories/);
  await rejectsWith(t.client.unary(m.writeFile, { path: "/proc/memoh-x/f.txt", content: Buffer.from("x") }, opts), Status.NOT_FOUND, /\/proc\/memoh-x\/f.txt: no such file or directory/);
  await fs.writeFile(at("to-proc.txt"), "x");
  await rejectsWith(t.client.unary(m.rename, { from: "to-proc.txt", to: "/proc/memoh-x/f.txt" }, opts), Status.NOT_FOUND, /\/proc\/memoh-x\/f.txt: no such file or directory/);
  assert.equal(await fs.readFile(at("to-proc.txt"), "utf8"), "x", "the source stays");
  // Still serving, and mkdir -p elsewhere works as before.
  await t.client.unary(m.mkdir, { path: "after-proc/a/b", parents: true }, opts);
  assert.ok((await fs.stat(at("after-proc/a/b"))).isDirectory());
});

// ---------------------------------------------------------------- Rename

test("Rename moves a file and creates the destination's parents", async () => {
  await fs.mkdir(at("mv"));
  await fs.writeFile(at("mv/src.txt"), "payload");
  await t.client.unary(m.rename, { from: "mv/src.txt", to: "mv/deep/er/dst.txt" });
  assert.equal(await fs.readFile(at("mv/deep/er/dst.txt"), "utf8"), "payload");
  assert.equal(existsSync(at("mv/src.txt")), false);
});

test("Rename onto an existing path needs overwrite; overwrite replaces a file", async () => {
  await fs.mkdir(at("mv2"));
  await fs.writeFile(at("mv2/a"), "A");
  await fs.writeFile(at("mv2/b"), "B");
  await rejectsWith(t.client.unary(m.rename, { from: "mv2/a", to: "mv2/b" }), Status.ALREADY_EXISTS, /to: .*mv2\/b already exists/);
  assert.deepEqual([await fs.readFile(at("mv2/a"), "utf8"), await fs.readFile(at("mv2/b"), "utf8")], ["A", "B"]);
  await t.client.unary(m.rename, { from: "mv2/a", to: "mv2/b", overwrite: true });
  assert.equal(await fs.readFile(at("mv2/b"), "utf8"), "A");
  assert.equal(existsSync(at("mv2/a")), false);
});

test("Rename with overwrite: an empty directory is replaced, a non-empty one is FAILED_PRECONDITION", async () => {
  await fs.mkdir(at("mv3/src"), { recursive: true });
  await fs.writeFile(at("mv3/src/f"), "f");
  await fs.mkdir(at("mv3/full"));
  await fs.writeFile(at("mv3/full/keep"), "keep");
  await rejectsWith(t.client.unary(m.rename, { from: "mv3/src", to: "mv3/full", overwrite: true }), Status.FAILED_PRECONDITION, /not empty/);
  assert.equal(await fs.readFile(at("mv3/full/keep"), "utf8"), "keep");
  await fs.mkdir(at("mv3/empty"));
  await t.client.unary(m.rename, { from: "mv3/src", to: "mv3/empty", overwrite: true });
  assert.equal(await fs.readFile(at("mv3/empty/f"), "utf8"), "f");
  await fs.writeFile(at("mv3/plain"), "p");
  await rejectsWith(t.client.unary(m.rename, { from: "mv3/plain", to: "mv3/full", overwrite: true }), Status.FAILED_PRECONDITION, /directory/);
});

test("Rename with overwrite from one hard link of a file onto another leaves only the new name", async () => {
  await fs.mkdir(at("hl"));
  await fs.writeFile(at("hl/h1"), "same");
  await fs.link(at("hl/h1"), at("hl/h2"));
  await rejectsWith(t.client.unary(m.rename, { from: "hl/h1", to: "hl/h2" }), Status.ALREADY_EXISTS, /to: .*hl\/h2 already exists/);
  await t.client.unary(m.rename, { from: "hl/h1", to: "hl/h2", overwrite: true });
  assert.deepEqual(await fs.readdir(at("hl")), ["h2"]);
  assert.equal(await fs.readFile(at("hl/h2"), "utf8"), "same");
  assert.equal((await fs.stat(at("hl/h2"))).nlink, 1);
  // Links in two directories; a third link elsewhere stays.
  await fs.mkdir(at("hl/other"));
  await fs.link(at("hl/h2"), at("hl/other/h3"));
  await fs.link(at("hl/h2"), at("hl/h4"));
  await t.client.unary(m.rename, { from: "hl/other/h3", to: "hl/h4", overwrite: true });
  assert.deepEqual(await fs.readdir(at("hl/other")), []);
  assert.equal((await fs.stat(at("hl/h4"))).nlink, 2, "h2 and h4 are left");
});

test("Rename with overwrite onto the same file reached through a symlinked parent changes nothing", async () => {
  await fs.mkdir(at("hl2/dir"), { recursive: true });
  await fs.symlink("dir", at("hl2/via"));
  await fs.writeFile(at("hl2/dir/f"), "one entry");
  await t.client.unary(m.rename, { from: "hl2/via/f", to: "hl2/dir/f", overwrite: true });
  assert.equal(await fs.readFile(at("hl2/dir/f"), "utf8"), "one entry");
  // With a second hard link elsewhere, too: the entry is one, whatever its link count.
  await fs.link(at("hl2/dir/f"), at("hl2/elsewhere"));
  await t.client.unary(m.rename, { from: "hl2/via/f", to: "hl2/dir/f", overwrite: true });
  await t.client.unary(m.rename, { from: "hl2/dir/f", to: "hl2/via/f", overwrite: true });
  assert.equal(await fs.readFile(at("hl2/dir/f"), "utf8"), "one entry");
  assert.equal((await fs.stat(at("hl2/dir/f"))).nlink, 2);
  assert.deepEqual((await fs.readdir(at("hl2/dir"))), ["f"]);
  assert.deepEqual(await tempFilesIn(at("hl2/dir")), []);
});

test("Rename errors name their field: missing from is NOT_FOUND, bad paths are INVALID_ARGUMENT", async () => {
  await rejectsWith(t.client.unary(m.rename, { from: "mv4/nope", to: "mv4/x" }), Status.NOT_FOUND, /^from: .*mv4\/nope/);
  await rejectsWith(t.client.unary(m.rename, { from: "", to: "x" }), Status.INVALID_ARGUMENT, /from is empty/);
  await fs.writeFile(at("mv4-file"), "x");
  await rejectsWith(t.client.unary(m.rename, { from: "mv4-file", to: "a\0b" }), Status.INVALID_ARGUMENT, /to contains a NUL/);
  await rejectsWith(t.client.unary(m.rename, { from: ".", to: "elsewhere" }), Status.INVALID_ARGUMENT, /it is the data dir/);
  await rejectsWith(t.client.unary(m.rename, { from: "..", to: "elsewhere" }), Status.INVALID_ARGUMENT, /holds the data dir/);
  await rejectsWith(t.client.unary(m.rename, { from: "/", to: "elsewhere" }), Status.INVALID_ARGUMENT, /refusing to move \//);
  await fs.mkdir(at("mv4dir"));
  await rejectsWith(t.client.unary(m.rename, { from: "mv4dir", to: "mv4dir/inside" }), Status.INVALID_ARGUMENT, /into itself/);
  assert.ok((await fs.stat(at("mv4dir"))).isDirectory());
});

test("a cross-device move copies the tree, then removes the source", async () => {
  await fs.mkdir(at("xdev/src/sub"), { recursive: true });
  await fs.writeFile(at("xdev/src/sub/data.bin"), "bytes");
  await fs.chmod(at("xdev/src/sub/data.bin"), 0o600);
  await fs.symlink("sub/data.bin", at("xdev/src/link"));
  await moveAcrossDevices(FsPath.fromText(at("xdev/src")), FsPath.fromText(at("xdev/dst")));
  assert.equal(existsSync(at("xdev/src")), false);
  assert.equal(await fs.readFile(at("xdev/dst/sub/data.bin"), "utf8"), "bytes");
  assert.equal((await fs.stat(at("xdev/dst/sub/data.bin"))).mode & 0o7777, 0o600);
  assert.equal(await fs.readlink(at("xdev/dst/link")), "sub/data.bin");
  assert.deepEqual(await tempFilesIn(at("xdev")), []);
});

test("a move from a kernel file system (sysfs, proc) is refused before anything is copied", async () => {
  // Copying /sys/kernel instead ran for minutes (thousands of files whose reads run driver code).
  const started = Date.now();
  await rejectsWith(t.client.unary(m.rename, { from: "/sys/kernel", to: "from-sys" }, { timeoutMs: 10_000 }), Status.FAILED_PRECONDITION, /cannot move \/sys\/kernel to another file system: it is on sysfs, a kernel file system/);
  await rejectsWith(t.client.unary(m.rename, { from: "/proc/sys/kernel", to: "from-proc", overwrite: true }, { timeoutMs: 10_000 }), Status.FAILED_PRECONDITION, /it is on proc, a kernel file system/);
  await rejectsWith(t.client.unary(m.rename, { from: "/sys/kernel/mm/transparent_hugepage/enabled", to: "thp" }, { timeoutMs: 10_000 }), Status.FAILED_PRECONDITION, /it is on sysfs/);
  assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
  assert.deepEqual((await fs.readdir(t.dataDir)).filter((n) => n.startsWith("from-") || n === "thp"), []);
  assert.deepEqual(await tempFilesIn(t.dataDir), []);
  assert.ok(existsSync("/sys/kernel/mm"), "the source is untouched");
});

test("a failed cross-device copy leaves the source and no partial destination", async () => {
  await fs.mkdir(at("xdev2/src"), { recursive: true });
  await fs.writeFile(at("xdev2/src/a"), "a");
  // The destination's parent is a file, so the copy cannot even start.
  await fs.writeFile(at("xdev2/blocker"), "");
  await assert.rejects(moveAcrossDevices(FsPath.fromText(at("xdev2/src")), FsPath.fromText(at("xdev2/blocker/dst"))));
  assert.equal(await fs.readFile(at("xdev2/src/a"), "utf8"), "a");
  assert.deepEqual((await fs.readdir(at("xdev2"))).sort(), ["blocker", "src"]);
});

test("Rename between the data dir and tmpfs (a real EXDEV) moves the data", async () => {
  const shm = await fs.mkdtemp("/dev/shm/memoh-rename-");
  try {
    assert.notEqual((await fs.stat(shm)).dev, (await fs.stat(t.dataDir)).dev, "/dev/shm must be another file system for a real EXDEV");
    await fs.writeFile(path.join(shm, "f.txt"), "across");
    await t.client.unary(m.rename, { from: path.join(shm, "f.txt"), to: "xdev3/f.txt" });
    assert.equal(await fs.readFile(at("xdev3/f.txt"), "utf8"), "across");
    assert.equal(existsSync(path.join(shm, "f.txt")), false);
  } finally {
    await fs.rm(shm, { recursive: true, force: true });
  }
});

test("a cross-device move whose caller goes away stops copying, removes its partial copy and keeps the source", async () => {
  const shm = await fs.mkdtemp("/dev/shm/memoh-rename-cancel-");
  try {
    // 3,000 files in 30 directories: seconds of copying, far past the caller's deadline.
    const block = Buffer.alloc(16 * 1024, 7);
    for (let d = 0; d < 30; d++) {
      await fs.mkdir(path.join(shm, "tree", `d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: 100 }, (_, f) => fs.writeFile(path.join(shm, "tree", `d${d}`, `f${f}`), block)));
    }
    await fs.mkdir(at("xdev4"));
    await rejectsWith(t.client.unary(m.rename, { from: path.join(shm, "tree"), to: "xdev4/tree" }, { timeoutMs: 150 }), Status.DEADLINE_EXCEEDED, /no answer within 150 ms/);
    // The agent notices the cancellation at its next entry and removes what it copied.
    for (const end = Date.now() + 30_000; (await tempFilesIn(at("xdev4"))).length > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await tempFilesIn(at("xdev4")), []);
    assert.deepEqual(await fs.readdir(at("xdev4")), [], "the move went on after its caller had gone");
    let files = 0;
    for (const d of await fs.readdir(path.join(shm, "tree"))) files += (await fs.readdir(path.join(shm, "tree", d))).length;
    assert.equal(files, 3000, "the source lost files");
  } finally {
    await fs.rm(shm, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------- DeleteFile

test("DeleteFile removes a file, and a symlink without touching its target", async () => {
  await fs.mkdir(at("rm"));
  await fs.writeFile(at("rm/file"), "x");
  await t.client.unary(m.deleteFile, { path: "rm/file" });
  assert.equal(existsSync(at("rm/file")), false);
  await fs.mkdir(at("rm/target"));
  await fs.writeFile(at("rm/target/precious"), "keep");
  await fs.symlink("target", at("rm/link"));
  await t.client.unary(m.deleteFile, { path: "rm/link", recursive: true });
  assert.equal(existsSync(at("rm/link")), false);
  assert.equal(await fs.readFile(at("rm/target/precious"), "utf8"), "keep");
});

test("DeleteFile of a directory: empty goes, non-empty needs recursive", async () => {
  await fs.mkdir(at("rm2/empty"), { recursive: true });
  await t.client.unary(m.deleteFile, { path: "rm2/empty" });
  assert.equal(existsSync(at("rm2/empty")), false);
  await fs.mkdir(at("rm2/full/nested"), { recursive: true });
  await fs.writeFile(at("rm2/full/nested/f"), "x");
  await rejectsWith(t.client.unary(m.deleteFile, { path: "rm2/full" }), Status.FAILED_PRECONDITION, /not empty; set recursive/);
  assert.equal(await fs.readFile(at("rm2/full/nested/f"), "utf8"), "x");
  await t.client.unary(m.deleteFile, { path: "rm2/full", recursive: true });
  assert.equal(existsSync(at("rm2/full")), false);
});

test("DeleteFile: missing is NOT_FOUND; /, the data dir, its parents and bad paths are INVALID_ARGUMENT", async () => {
  await rejectsWith(t.client.unary(m.deleteFile, { path: "rm3/missing" }), Status.NOT_FOUND, /rm3\/missing/);
  await rejectsWith(t.client.unary(m.deleteFile, { path: "/", recursive: true }), Status.INVALID_ARGUMENT, /refusing to delete \//);
  await fs.writeFile(at("canary"), "alive");
  await rejectsWith(t.client.unary(m.deleteFile, { path: ".", recursive: true }), Status.INVALID_ARGUMENT, /data dir/);
  await rejectsWith(t.client.unary(m.deleteFile, { path: t.dataDir + "/", recursive: true }), Status.INVALID_ARGUMENT, /data dir/);
  await rejectsWith(t.client.unary(m.deleteFile, { path: "..", recursive: true }), Status.INVALID_ARGUMENT, /holds the data dir/);
  assert.equal(await fs.readFile(at("canary"), "utf8"), "alive");
  await rejectsWith(t.client.unary(m.deleteFile, { path: "" }), Status.INVALID_ARGUMENT);
  await rejectsWith(t.client.unary(m.deleteFile, { path: "x\0" }), Status.INVALID_ARGUMENT);
});
