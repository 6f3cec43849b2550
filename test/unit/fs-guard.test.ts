// DeleteFile and Rename never take away the data dir, the agent's socket (dir)
// or "/", however the path names them: the checks compare real paths and inodes.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith } from "./helpers/fs.js";

const m = ContainerService.method;
let t: TestAgent;
let socketPath: string;

before(async () => {
  t = await startTestAgent();
  socketPath = path.join(t.root, "run", "bridge.sock");
  await fs.writeFile(path.join(t.dataDir, "canary"), "alive");
  // up -> the directory holding the data dir and the socket dir; top -> the one above.
  await fs.symlink(t.root, path.join(t.dataDir, "up"));
  await fs.symlink(path.dirname(t.root), path.join(t.dataDir, "top"));
});
after(async () => {
  await t.close();
});

async function assertIntact(): Promise<void> {
  assert.equal(await fs.readFile(path.join(t.dataDir, "canary"), "utf8"), "alive");
  assert.ok((await fs.lstat(socketPath)).isSocket(), "the agent's socket is still there");
  assert.ok((await t.client.unary(m.info, {})).pid > 0, "the agent still answers");
}

test("the data dir is caught however it is named: '.', '/data/.', '/data/../data', through a symlinked parent", async () => {
  for (const p of [".", `${t.dataDir}/.`, `${t.dataDir}/../data`, `${t.dataDir}//`, "up/data", "up/./data/"]) {
    await rejectsWith(t.client.unary(m.deleteFile, { path: p, recursive: true }), Status.INVALID_ARGUMENT, /refusing to delete the data dir .* itself/);
    await rejectsWith(t.client.unary(m.rename, { from: p, to: "elsewhere" }), Status.INVALID_ARGUMENT, /from: refusing to move .*: it is the data dir/);
  }
  await assertIntact();
});

test("what holds the data dir is refused, through a symlinked parent too", async () => {
  for (const p of ["..", t.root, `top/${path.basename(t.root)}`, `top/${path.basename(t.root)}/`]) {
    await rejectsWith(t.client.unary(m.deleteFile, { path: p, recursive: true }), Status.INVALID_ARGUMENT, /holds the data dir/);
    await rejectsWith(t.client.unary(m.rename, { from: p, to: "/tmp/elsewhere" }), Status.INVALID_ARGUMENT, /holds the data dir/);
  }
  await rejectsWith(t.client.unary(m.deleteFile, { path: "/", recursive: true }), Status.INVALID_ARGUMENT, /refusing to delete \//);
  await assertIntact();
});

test("the agent's socket and socket dir are refused for delete, move and replace", async () => {
  await rejectsWith(t.client.unary(m.deleteFile, { path: "up/run", recursive: true }), Status.INVALID_ARGUMENT, /it is the agent's socket dir/);
  await rejectsWith(t.client.unary(m.deleteFile, { path: "../run/bridge.sock" }), Status.INVALID_ARGUMENT, /it is the agent's socket/);
  await rejectsWith(t.client.unary(m.rename, { from: "up/run/bridge.sock", to: "stolen.sock" }), Status.INVALID_ARGUMENT, /it is the agent's socket/);
  await fs.writeFile(path.join(t.dataDir, "impostor"), "x");
  await rejectsWith(
    t.client.unary(m.rename, { from: "impostor", to: "up/run/bridge.sock", overwrite: true }),
    Status.INVALID_ARGUMENT,
    /to: refusing to replace .*it is the agent's socket/,
  );
  await assertIntact();
});

test("a symlink to the data dir is only a link: deleting it removes the link and nothing else", async () => {
  // "." and ".." are resolved by name, so "alias/." and "alias/" name the link too.
  for (const p of ["alias", "alias/.", "alias/"]) {
    await fs.symlink(t.dataDir, path.join(t.dataDir, "alias"));
    await t.client.unary(m.deleteFile, { path: p, recursive: true });
    await assert.rejects(fs.lstat(path.join(t.dataDir, "alias")), { code: "ENOENT" });
    await assertIntact();
  }
});

test("a directory cannot be moved into itself through a symlinked parent either", async () => {
  await fs.mkdir(path.join(t.dataDir, "box/inner"), { recursive: true });
  await fs.symlink(path.join(t.dataDir, "box/inner"), path.join(t.dataDir, "into-box"));
  await rejectsWith(t.client.unary(m.rename, { from: "box", to: "into-box/box" }), Status.INVALID_ARGUMENT, /into itself/);
  assert.ok((await fs.stat(path.join(t.dataDir, "box/inner"))).isDirectory());
});
