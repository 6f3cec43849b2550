// The memoh-workspace CLI end to end against the real server process: create with a
// progress bar (an image pulled from the test registry), exec passing the exit code
// through, cp of a file and a directory both ways (symlinks reported, not copied), an
// interactive shell driven through a pseudo-terminal, events, tokens, rm; errors print
// the API's message and exit ≠ 0.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import pty from "node-pty";
import { buildTestImages } from "./env/images.js";
import { startRegistry, type RegistryEnv } from "./env/registry.js";
import { CLI, startServerEnv, type ServerEnv } from "./env/server.js";
import { waitFor } from "./env/workspace.js";

let s: ServerEnv;
let registry: RegistryEnv;

before(async () => {
  [s, registry] = await Promise.all([startServerEnv(), startRegistry()]);
});

after(async () => {
  await s?.close();
  await registry?.stop();
});

function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...s.processEnv, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? "");
  });
}

test("create (progress) → exec (exit code passed through) → cp a file and a directory both ways → shell through a pty → events → rm", async () => {
  const images = await buildTestImages();
  const ref = await registry.push(images.glibc.image, "memoh/cli-glibc");
  const bot = "cli-demo";

  const created = await cli(["create", bot, "--image", ref, "--memory", "512"]);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stderr, /pulling/);
  assert.match(created.stderr, /\d+\/\d+ bytes/, "no progress bar was drawn");
  assert.match(created.stdout, /status\s+running/);
  assert.match(created.stdout, /512 MiB/);

  const ok = await cli(["exec", bot, "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
  assert.deepEqual({ code: ok.code, stdout: ok.stdout, stderr: ok.stderr }, { code: 7, stdout: "out\n", stderr: "err\n" });
  const env = await cli(["exec", bot, "--env", "A=1", "--cwd", "/tmp", "--", "sh", "-c", "echo $A $(pwd)"]);
  assert.equal(env.stdout, "1 /tmp\n");

  // cp: a file and a directory tree, up and back down, byte for byte.
  const work = fs.mkdtempSync(path.join(s.dataRoot, "cli-"));
  const tree = path.join(work, "tree");
  fs.mkdirSync(path.join(tree, "sub", "deeper"), { recursive: true });
  fs.mkdirSync(path.join(tree, "empty"));
  fs.writeFileSync(path.join(tree, "top.txt"), "top\n");
  fs.writeFileSync(path.join(tree, "sub", "deeper", "bin.dat"), Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 256)));
  const single = path.join(work, "one.txt");
  fs.writeFileSync(single, "single file\n");
  assert.equal((await cli(["cp", single, `${bot}:/data/one.txt`])).code, 0);
  const up = await cli(["cp", tree, `${bot}:/data/tree`]);
  assert.equal(up.code, 0, up.stderr);
  const listing = await cli(["exec", bot, "--", "sh", "-c", "cd /data && find tree | sort && cat one.txt"]);
  assert.equal(listing.stdout, "tree\ntree/empty\ntree/sub\ntree/sub/deeper\ntree/sub/deeper/bin.dat\ntree/top.txt\nsingle file\n");
  const back = path.join(work, "back");
  assert.equal((await cli(["cp", `${bot}:/data/tree`, back])).code, 0);
  assert.equal((await cli(["cp", `${bot}:/data/one.txt`, path.join(work, "one-back.txt")])).code, 0);
  assert.deepEqual(fs.readFileSync(path.join(back, "sub", "deeper", "bin.dat")), fs.readFileSync(path.join(tree, "sub", "deeper", "bin.dat")));
  assert.equal(fs.readFileSync(path.join(back, "top.txt"), "utf8"), "top\n");
  assert.ok(fs.statSync(path.join(back, "empty")).isDirectory());
  assert.equal(fs.readFileSync(path.join(work, "one-back.txt"), "utf8"), "single file\n");
  assert.notEqual((await cli(["cp", single, path.join(work, "x")])).code, 0, "cp between two local paths must fail");

  // Symlinks are not copied either way: each is reported on stderr and the rest copies.
  const linked = path.join(work, "linked");
  fs.mkdirSync(linked);
  fs.writeFileSync(path.join(linked, "real.txt"), "real\n");
  fs.symlinkSync("real.txt", path.join(linked, "alias"));
  const upLinked = await cli(["cp", linked, `${bot}:/data/linked`]);
  assert.equal(upLinked.code, 0, upLinked.stderr);
  assert.equal(upLinked.stderr, `memoh-workspace: skipped ${path.join(linked, "alias")}: a symlink; links are not copied\n`);
  assert.equal((await cli(["exec", bot, "--", "sh", "-c", "cd /data/linked && ls -A && ln -s /etc/hostname host-link"])).stdout, "real.txt\n");
  const downLinked = await cli(["cp", `${bot}:/data/linked`, path.join(work, "linked-back")]);
  assert.equal(downLinked.code, 0, downLinked.stderr);
  assert.equal(downLinked.stderr, `memoh-workspace: skipped ${bot}:/data/linked/host-link: a symlink (to "/etc/hostname"); links are not copied\n`);
  assert.deepEqual(fs.readdirSync(path.join(work, "linked-back")), ["real.txt"]);

  // shell: through a real pseudo-terminal, as a person would use it.
  const term = pty.spawn(process.execPath, [CLI, "shell", bot], { name: "xterm", cols: 100, rows: 30, env: s.processEnv as Record<string, string> });
  let screen = "";
  term.onData((d) => (screen += d));
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  await waitFor("a prompt", () => (screen.includes("#") || screen.includes("$") ? true : undefined), 15_000);
  term.write("stty size; echo typed-$((6*7))\r");
  await waitFor("the answer", () => (screen.includes("typed-42") ? true : undefined), 10_000);
  assert.match(screen, /30 100/);
  term.resize(120, 40);
  await new Promise((r) => setTimeout(r, 300));
  term.write("stty size\r");
  await waitFor("the new size", () => (screen.includes("40 120") ? true : undefined), 10_000);
  term.write("exit 3\r");
  assert.equal(await exited, 3);

  const events = await cli(["events", bot, "--json"]);
  assert.ok((JSON.parse(events.stdout) as Array<{ type: string }>).some((e) => e.type === "created"));
  const ls = await cli(["ls", "--json"]);
  assert.ok((JSON.parse(ls.stdout) as Array<{ bot_id: string }>).some((w) => w.bot_id === bot));

  const rm = await cli(["rm", bot]);
  assert.equal(rm.code, 0, rm.stderr);
  const gone = await cli(["status", bot]);
  assert.notEqual(gone.code, 0);
  assert.match(gone.stderr, /no workspace \(not_found\)/);
});

test("tokens from the CLI; a bot token from MEMOH_TOKEN reaches its bot only; an unreachable server is a clear error", async () => {
  const bot = "cli-tok";
  assert.equal((await cli(["create", bot])).code, 0);
  const made = await cli(["token", "create", bot, "--name", "ci", "--json"]);
  assert.equal(made.code, 0, made.stderr);
  const { token, info } = JSON.parse(made.stdout) as { token: string; info: { id: string } };
  const asBot = { MEMOH_TOKEN: token };
  assert.equal((await cli(["exec", bot, "--", "true"], { env: asBot })).code, 0);
  const denied = await cli(["ls"], { env: asBot });
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /admin token \(permission_denied\)/);
  const listed = await cli(["token", "ls"]);
  assert.match(listed.stdout, new RegExp(info.id));
  assert.equal((await cli(["token", "revoke", info.id])).code, 0);
  const revoked = await cli(["status", bot], { env: asBot });
  assert.match(revoked.stderr, /revoked \(unauthenticated\)/);
  const nowhere = await cli(["ls"], { env: { MEMOH_URL: "http://127.0.0.1:9" } });
  assert.notEqual(nowhere.code, 0);
  assert.match(nowhere.stderr, /cannot reach http:\/\/127\.0\.0\.1:9/);
  assert.equal((await cli(["rm", bot])).code, 0);
});
