// Workspace data end to end through the real server process (containerd, CNI,
// PostgreSQL, HTTP): versions and rollback, export → delete → create → import (API and
// CLI), delete with preserve → create with restore, a backup that cannot be written, a
// backup beyond the import limits, malicious archives, a file growing during an export,
// and the orchestrator killed with SIGKILL in the middle of a version create, a
// rollback, an import and a backup. One file because every test uses the one server and
// containerd started in before(), with the import limits set low (64 MiB, 5000 entries).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import zlib from "node:zlib";
import tar from "tar-stream";
import { apiClient } from "./env/api-client.js";
import { verifyArchiveFile } from "../../host/data/archive-read.js";
import { ContainerdClient } from "../../host/containerd/client.js";
import { CLI, startServerEnv, type ServerEnv } from "./env/server.js";

const run = promisify(execFile);
let s: ServerEnv;

before(async () => {
  s = await startServerEnv({ postgres: true, extraEnv: { MEMOH_IMPORT_MAX_MB: "64", MEMOH_IMPORT_MAX_ENTRIES: "5000" } });
});

after(async () => {
  await s?.close();
});

const { api, ok, sh } = apiClient(() => s);

/** Every entry under /data: path, type, mode, mtime (s), sha256 or link target. */
const TREE = `cd /data && find . -mindepth 1 | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then echo "$f link $(readlink "$f")";
  elif [ -d "$f" ]; then echo "$f dir $(stat -c %a "$f") $(stat -c %Y "$f")";
  else echo "$f file $(stat -c %a "$f") $(stat -c %Y "$f") $(sha256sum < "$f" | cut -c1-64)"; fi; done`;

const tree = (bot: string) => sh(bot, TREE);

/** A tree with a deep file, binary data, modes, a symlink, an empty dir and old mtimes. */
async function populate(bot: string, tag: string): Promise<string> {
  await sh(
    bot,
    `set -e; mkdir -p /data/a/b/c /data/empty; printf '${tag} deep\\n' > /data/a/b/c/deep.txt; chmod 640 /data/a/b/c/deep.txt;
     dd if=/dev/urandom of=/data/a/big.bin bs=64k count=40 2>/dev/null; printf 'exec' > /data/run.sh; chmod 755 /data/run.sh;
     ln -s a/b/c/deep.txt /data/link; ln -s /etc/hostname /data/abs-link; chmod 750 /data/empty;
     touch -d '2021-02-03 04:05:06' /data/a/b/c/deep.txt /data/run.sh; touch -d '2020-01-01 00:00:00' /data/empty /data/a/b/c`,
  );
  const t = await tree(bot);
  assert.match(t, /deep\.txt file 640 \d+ [0-9a-f]{64}/);
  assert.match(t, /\.\/link link a\/b\/c\/deep\.txt/);
  return t;
}

async function create(bot: string, body: Record<string, unknown> = {}): Promise<void> {
  await ok("POST", `/bots/${bot}/container`, { json: body });
}

async function status(bot: string): Promise<any> {
  return ok("GET", `/bots/${bot}/container`);
}

/** Committed version snapshots of the bot in containerd (label memoh.version_of). */
async function versionSnapshots(bot: string): Promise<string[]> {
  const { stdout } = await s.env.ctr(["snapshots", "ls"]);
  return stdout
    .split("\n")
    .map((l) => l.split(/\s+/)[0] ?? "")
    .filter((n) => n.startsWith(`workspace-${bot}@`))
    .sort();
}

function sseFrames(text: string): Array<{ event: string; data: any }> {
  return text
    .split("\n\n")
    .filter((f) => f.includes("data: "))
    .map((f) => ({ event: /event: (.*)/.exec(f)?.[1] ?? "message", data: JSON.parse(/data: (.*)/.exec(f)![1]!) }));
}

test("versions: v1, v2, rollback to v1 gives v1's tree, rolling back that rollback gives v2's; list, lineage, delete", async () => {
  const bot = "ver1";
  await create(bot);
  const t1 = await populate(bot, "one");
  const v1 = await ok("POST", `/bots/${bot}/container/snapshots`, { json: { display_name: "first" } });
  assert.equal(v1.version, 1);
  assert.equal(v1.source, "manual");
  assert.equal((await status(bot)).task, "running");
  assert.equal(await tree(bot), t1, "a version create changed the tree");

  await sh(bot, "set -e; echo changed > /data/a/b/c/deep.txt; rm /data/a/big.bin; mkdir /data/new; echo n > /data/new/file; rm /data/link; ln -s run.sh /data/link");
  const t2 = await tree(bot);
  assert.notEqual(t2, t1);
  const v2 = await ok("POST", `/bots/${bot}/container/snapshots`, { json: { display_name: "second" } });
  assert.equal(v2.version, 2);
  await sh(bot, "echo after-v2 > /data/after");
  const t2b = await tree(bot);

  // Versions are GC roots of their own: a garbage collection keeps them.
  const cd = new ContainerdClient({ address: s.env.address, namespace: s.env.namespace });
  try {
    for (const v of [v1, v2]) assert.ok((await cd.snapshots.stat(v.snapshot)).labels["containerd.io/gc.root"], `${v.snapshot} is not a GC root`);
    await cd.collectGarbage();
    for (const v of [v1, v2]) assert.equal((await cd.snapshots.stat(v.snapshot)).kind, "committed", `GC took ${v.snapshot}`);
  } finally {
    cd.close();
  }

  const rb = await ok("POST", `/bots/${bot}/container/snapshots/rollback`, { json: { version: 1 } });
  assert.equal(rb.rolled_back_to.version, 1);
  assert.equal(rb.saved.version, 3);
  assert.equal(rb.saved.source, "rollback");
  assert.equal((await status(bot)).task, "running");
  assert.equal(await tree(bot), t1, "rollback to v1 does not give v1's tree");

  const undo = await ok("POST", `/bots/${bot}/container/snapshots/rollback`, { json: { version: 3 } });
  assert.equal(undo.saved.version, 4);
  assert.equal(await tree(bot), t2b, "rolling back to the state saved before the rollback does not give it back");

  // An exec can save a version first (source pre_exec); rolling back to it undoes the command.
  const before = await tree(bot);
  const ran = await ok("POST", `/bots/${bot}/container/exec`, { json: { command: "rm -rf /data/a", version_before: true } });
  assert.equal(ran.exit_code, 0);
  assert.notEqual(await tree(bot), before);
  await ok("POST", `/bots/${bot}/container/snapshots/rollback`, { json: { version: 5 } });
  assert.equal(await tree(bot), before, "rolling back to the pre_exec version does not undo the command");

  const list = await ok("GET", `/bots/${bot}/container/snapshots`);
  assert.deepEqual(
    list.versions.map((v: any) => [v.version, v.source, v.display_name]),
    [
      [1, "manual", "first"],
      [2, "manual", "second"],
      [3, "rollback", "before rollback to v1"],
      [4, "rollback", "before rollback to v3"],
      [5, "pre_exec", "before exec: rm -rf /data/a"],
      [6, "rollback", "before rollback to v5"],
    ],
  );
  assert.equal(list.lineage[0], 5, "the running rootfs descends from version 5");
  assert.deepEqual(list.lineage, [5, 3, 2, 1], "the lineage: v5 was saved on top of v3, which was saved on top of v2, on v1");
  // Every committed snapshot has its rows; the events say what happened.
  assert.deepEqual(await versionSnapshots(bot), list.versions.map((v: any) => v.snapshot).sort());
  const events = (await ok("GET", `/bots/${bot}/container/events?limit=100`)).events.map((e: any) => e.type);
  assert.equal(events.filter((t: string) => t === "version_created").length, 3);
  assert.equal(events.filter((t: string) => t === "rolled_back").length, 3);

  // Version 6 (a leaf nothing depends on) goes with its snapshot; version 2 has children and stays in containerd.
  const del6 = await ok("DELETE", `/bots/${bot}/container/snapshots/6`);
  assert.deepEqual(del6, { deleted: true, snapshot_removed: true });
  const del2 = await ok("DELETE", `/bots/${bot}/container/snapshots/2`);
  assert.deepEqual(del2, { deleted: true, snapshot_removed: false });
  assert.equal((await api("DELETE", `/bots/${bot}/container/snapshots/2`)).status, 404);
  assert.equal((await api("POST", `/bots/${bot}/container/snapshots/rollback`, { json: { version: 99 } })).status, 404);
  const after2 = await ok("GET", `/bots/${bot}/container/snapshots`);
  assert.deepEqual(after2.versions.map((v: any) => v.version), [1, 3, 4, 5]);
  assert.equal((await versionSnapshots(bot)).length, 5, "v2's snapshot stays while v3 depends on it");
  assert.equal(await tree(bot), before);

  await ok("DELETE", `/bots/${bot}/container`);
  assert.deepEqual(await versionSnapshots(bot), [], "a deleted workspace leaves version snapshots behind");
});

test("export → delete → create fresh → import: every file's sha256, symlinks, modes and mtimes identical (raw body and multipart)", async () => {
  const bot = "exp1";
  await create(bot);
  const t = await populate(bot, "exp");
  const exported = await api("POST", `/bots/${bot}/container/data/export`);
  assert.equal(exported.status, 200, exported.text);
  const file = path.join(s.dataRoot, "exp1.tar.gz");
  fs.writeFileSync(file, exported.body);
  const verified = await verifyArchiveFile(file);
  assert.equal(verified.entries, t.trim().split("\n").length + 1, "one entry per file plus the root");

  await ok("DELETE", `/bots/${bot}/container`);
  await create(bot);
  assert.equal(await tree(bot), "", "a fresh workspace has data");
  const imported = await ok("POST", `/bots/${bot}/container/data/import`, { raw: exported.body });
  assert.equal(imported.entries, verified.entries);
  assert.equal((await status(bot)).task, "running");
  assert.equal(await tree(bot), t);

  // Multipart, into a stopped workspace (read from its snapshot, written into it).
  await sh(bot, "rm -rf /data/* && echo other > /data/other");
  await ok("POST", `/bots/${bot}/container/stop`, { json: {} });
  const boundary = `----memoh${randomBytes(6).toString("hex")}`;
  const multipart = Buffer.concat([
    Buffer.from(`--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="data.tar.gz"\r\ncontent-type: application/gzip\r\n\r\n`),
    exported.body,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  await ok("POST", `/bots/${bot}/container/data/import`, { raw: multipart, contentType: `multipart/form-data; boundary=${boundary}` });
  assert.equal((await status(bot)).status, "stopped", "an import started a stopped workspace");
  const fromStopped = await api("POST", `/bots/${bot}/container/data/export`);
  assert.equal(fromStopped.status, 200);
  fs.writeFileSync(file, fromStopped.body);
  assert.equal((await verifyArchiveFile(file)).entries, verified.entries);
  await ok("POST", `/bots/${bot}/container/start`, { json: {} });
  assert.equal(await tree(bot), t);

  // fs/archive of a folder and fs/extract into another.
  const folder = await api("GET", `/bots/${bot}/container/fs/archive?path=/data/a`);
  assert.equal(folder.status, 200, folder.text);
  const ex = await ok("POST", `/bots/${bot}/container/fs/extract?path=/data/copy`, { raw: folder.body });
  assert.ok(ex.files >= 4);
  const [orig, copy] = (await sh(bot, "sha256sum < /data/a/big.bin; sha256sum < /data/copy/big.bin")).trim().split("\n");
  assert.equal(copy, orig);
  assert.equal(await sh(bot, "cat /data/copy/b/c/deep.txt"), "exp deep\n");
  await ok("DELETE", `/bots/${bot}/container`);
});

test("export of a file that keeps growing during the export completes and is a valid archive", async () => {
  const bot = "grow1";
  await create(bot);
  await sh(bot, "dd if=/dev/zero of=/data/grow.log bs=1M count=48 2>/dev/null; echo x > /data/small");
  // A writer appends for as long as the export runs.
  const writer = api("POST", `/bots/${bot}/container/exec`, {
    json: { command: "end=$(( $(date +%s) + 20 )); while [ ! -e /tmp/stop ] && [ $(date +%s) -lt $end ]; do dd if=/dev/urandom bs=64k count=4 2>/dev/null >> /data/grow.log; done", timeout_s: 60 },
  });
  await sh(bot, "s=$(stat -c %s /data/grow.log); while [ $(stat -c %s /data/grow.log) -le $s ]; do sleep 0.1; done");
  const exported = await api("POST", `/bots/${bot}/container/data/export`);
  await sh(bot, "touch /tmp/stop");
  await writer;
  assert.equal(exported.status, 200, exported.text);
  const file = path.join(s.dataRoot, "grow.tar.gz");
  fs.writeFileSync(file, exported.body);
  const v = await verifyArchiveFile(file);
  assert.equal(v.entries, 3);
  assert.ok(v.bytes >= 48 * 1024 * 1024);
  await ok("DELETE", `/bots/${bot}/container`);
});

test("a folder archive follows a symlink named as the folder; kernel files that cannot be read do not end it", async () => {
  const bot = "arch1";
  await create(bot);
  await sh(bot, "mkdir -p /data/real/sub && echo hi > /data/real/sub/f && ln -s /data/real /data/link && ln -s /proc/1 /data/proc1 && ln -s /data/real/sub/f /data/file-link");
  const viaLink = await api("GET", `/bots/${bot}/container/fs/archive?path=/data/link`);
  assert.equal(viaLink.status, 200, viaLink.text);
  await ok("POST", `/bots/${bot}/container/fs/extract?path=/data/copy`, { raw: viaLink.body });
  assert.equal(await sh(bot, "cat /data/copy/sub/f"), "hi\n");
  // A process's /proc directory: some of its files answer a read with an error; each is marked, the archive completes.
  const proc = await api("GET", `/bots/${bot}/container/fs/archive?path=/data/proc1`);
  assert.equal(proc.status, 200, proc.text);
  const file = path.join(s.dataRoot, "proc1.tar.gz");
  fs.writeFileSync(file, proc.body);
  assert.ok((await verifyArchiveFile(file)).entries > 20);
  // A link to a file is refused as the file itself is.
  for (const p of ["/data/file-link", "/data/real/sub/f"]) {
    const refused = await api("GET", `/bots/${bot}/container/fs/archive?path=${p}`);
    assert.equal(refused.status, 409, refused.text);
    assert.match(refused.json.error.message, /is a regular file, not a directory/);
  }
  await ok("DELETE", `/bots/${bot}/container`);
});

test("delete with preserve → create with restore: identical tree; an unwritable backups dir aborts the delete and the workspace runs with its data", async () => {
  const bot = "keep1";
  await create(bot);
  const t = await populate(bot, "keep");

  // The backups dir read-only (a read-only tmpfs over it: root ignores mode bits).
  const backups = path.join(s.dataRoot, "backups");
  fs.mkdirSync(backups, { recursive: true });
  await run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", backups]);
  try {
    const refused = await api("DELETE", `/bots/${bot}/container?preserve_data=true`);
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.json.error.message, /backup .* could not be written/);
  } finally {
    await run("umount", [backups]);
  }
  const st = await status(bot);
  assert.equal(st.status, "running");
  assert.equal(st.task, "running");
  assert.equal(await tree(bot), t, "the data changed after a refused delete");

  const del = await api("DELETE", `/bots/${bot}/container?preserve_data=true`, { accept: "text/event-stream" });
  const frames = sseFrames(del.text);
  assert.equal(frames[0]?.event, "preserving");
  const done = frames.find((f) => f.event === "complete");
  assert.ok(done, del.text);
  const preserving = frames.filter((f) => f.event === "progress");
  assert.ok(preserving.length > 0 && preserving.every((f) => f.data.phase === "preserving"), del.text);
  assert.equal(preserving.at(-1)!.data.files, done.data.backup.files, "the last progress does not count every entry");
  assert.equal(preserving.at(-1)!.data.bytes, done.data.backup.bytes);
  const backupFile = path.join(backups, `${bot}.tar.gz`);
  assert.equal(done.data.backup.path, backupFile);
  assert.equal(fs.statSync(backupFile).mode & 0o777, 0o600);
  assert.equal((await api("GET", `/bots/${bot}/container`)).status, 404);

  const created = await api("POST", `/bots/${bot}/container`, { json: { restore_data: true }, accept: "text/event-stream" });
  const cf = sseFrames(created.text);
  assert.ok(cf.some((f) => f.event === "restoring"), created.text);
  const restoring = cf.filter((f) => f.event === "progress");
  assert.ok(restoring.length > 0 && restoring.every((f) => f.data.phase === "restoring"), created.text);
  assert.equal(restoring.at(-1)!.data.files, done.data.backup.files, "the restore's last progress does not count every entry");
  assert.ok(cf.some((f) => f.event === "complete"), created.text);
  assert.equal(await tree(bot), t, "the restored tree differs");
  assert.equal(fs.existsSync(backupFile), false, "the backup stays after a successful restore");

  // On demand: preserve again, create fresh, restore.
  await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  await create(bot);
  assert.equal(await tree(bot), "");
  const restored = await ok("POST", `/bots/${bot}/container/data/restore`);
  assert.ok(restored.entries > 5);
  assert.equal(await tree(bot), t);
  assert.equal((await api("POST", `/bots/${bot}/container/data/restore`)).status, 404, "a second restore without a backup");
  await ok("DELETE", `/bots/${bot}/container`);
});

test("a backup beyond the import limits (more entries and bytes) is restored whole, on create and on demand; as an upload the same archive is refused", async () => {
  const bot = "big1";
  await create(bot);
  // 5200 entries and 70 MiB of content: over both limits of this server (5000, 64 MiB).
  await sh(bot, "mkdir /data/many && cd /data/many && seq 1 5200 | xargs touch && dd if=/dev/zero of=/data/zeros bs=1M count=70 2>/dev/null");
  const summary = () => sh(bot, "cd /data && find . | sort | sha256sum && find . | wc -l && sha256sum zeros");
  const before = await summary();
  assert.match(before, /^[0-9a-f]{64} {2}-\n5203\n/);

  const deleted = await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  assert.ok(deleted.backup.files > 5000 && deleted.backup.bytes > 64 * 1024 * 1024, JSON.stringify(deleted));
  const backupFile = path.join(s.dataRoot, "backups", `${bot}.tar.gz`);
  const backupBytes = fs.readFileSync(backupFile);
  await create(bot, { restore_data: true });
  assert.equal(await summary(), before, "the restored /data differs");
  assert.equal(fs.existsSync(backupFile), false);

  // Uploaded, the same archive meets the import limits.
  const refused = await api("POST", `/bots/${bot}/container/data/import`, { raw: backupBytes });
  assert.equal(refused.status, 413, refused.text);
  assert.equal(await summary(), before);

  await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  await create(bot);
  const restored = await ok("POST", `/bots/${bot}/container/data/restore`);
  assert.equal(restored.entries, 5203);
  assert.equal(await summary(), before);
  await ok("DELETE", `/bots/${bot}/container`);
});

function archive(entries: Array<{ header: Partial<tar.Header> & { name: string }; data?: Buffer }>): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry(e.header, e.data ?? Buffer.alloc(0));
  pack.finalize();
  const chunks: Buffer[] = [];
  const gz = zlib.createGzip();
  pack.pipe(gz as unknown as NodeJS.WritableStream);
  return new Promise((resolve, reject) => {
    gz.on("data", (c: Buffer) => chunks.push(c));
    gz.on("end", () => resolve(Buffer.concat(chunks)));
    gz.on("error", reject);
  });
}

test("malicious archives are refused; nothing is written outside /data and the data is unchanged", async () => {
  const bot = "evil1";
  await create(bot);
  const t = await populate(bot, "evil");
  const hostDir = fs.mkdtempSync(path.join(s.dataRoot, "outside-"));
  const file = (name: string, data = "pwned") => ({ header: { name, type: "file" as const, size: Buffer.byteLength(data), mode: 0o644 }, data: Buffer.from(data) });
  const cases: Array<[string, Promise<Buffer> | Buffer, number, RegExp]> = [
    ["../ escape", archive([file("ok.txt"), file("../escape.txt")]), 400, /climbs out/],
    ["absolute path", archive([file("/etc/evil")]), 400, /absolute path/],
    ["symlink, then a file through it", archive([{ header: { name: "out", type: "symlink", linkname: hostDir } }, file("out/planted.txt")]), 400, /through the symlink/],
    ["symlink to /etc, then a file through it", archive([{ header: { name: "etc", type: "symlink", linkname: "/etc" } }, file("etc/evil")]), 400, /through the symlink/],
    ["hardlink to a host file", archive([{ header: { name: "passwd", type: "link", linkname: "/etc/passwd" } }]), 400, /hardlink/],
    ["device node", archive([{ header: { name: "sda", type: "block-device", devmajor: 8, devminor: 0 } }]), 400, /device node/],
    ["character device", archive([{ header: { name: "mem", type: "character-device", devmajor: 1, devminor: 1 } }]), 400, /device node/],
    ["fifo", archive([{ header: { name: "pipe", type: "fifo" } }]), 400, /FIFO/],
    ["gzip bomb", archive([{ header: { name: "bomb", type: "file", size: 256 * 1024 * 1024 }, data: Buffer.alloc(256 * 1024 * 1024) }]), 413, /more than 67108864 bytes/],
    ["headerless gzip bomb", zlib.gzipSync(Buffer.alloc(200 * 1024 * 1024, 0x41)), 400, /corrupt|not valid|unknown format|invalid/i],
    ["truncated", archive([file("a"), { header: { name: "b", type: "file", size: 300_000 }, data: randomBytes(300_000) }]).then((b) => b.subarray(0, b.byteLength - 5000)), 400, /corrupt|truncated|not valid/i],
    ["not gzip", Buffer.from("definitely not an archive"), 400, /not valid gzip/],
  ];
  for (const [what, body, code, pattern] of cases) {
    const r = await api("POST", `/bots/${bot}/container/data/import`, { raw: await body });
    assert.equal(r.status, code, `${what}: ${r.text}`);
    assert.match(r.json.error.message, pattern, what);
    assert.equal(await tree(bot), t, `${what}: the data changed`);
  }
  assert.deepEqual(fs.readdirSync(hostDir), [], "a file was written on the host");
  assert.equal(await sh(bot, "ls /escape.txt /etc/evil /data/../escape.txt 2>/dev/null | wc -l"), "0\n");
  assert.equal((await status(bot)).task, "running");
  const mnt = path.join(s.dataRoot, "mnt");
  assert.deepEqual(fs.existsSync(mnt) ? fs.readdirSync(mnt) : [], [], "a host mount was left");
  // Refused archives are checked before the workspace is touched: it was never paused.
  const events = (await ok("GET", `/bots/${bot}/container/events?limit=100`)).events.map((e: any) => e.type);
  assert.equal(events.includes("paused"), false, "a refused import paused the workspace");
  await ok("DELETE", `/bots/${bot}/container`);
});

function cli(args: string[], opts: { stdoutFile?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const outFd = opts.stdoutFile !== undefined ? fs.openSync(opts.stdoutFile, "w") : undefined;
    const child = spawn(process.execPath, [CLI, ...args], { env: s.processEnv, stdio: ["ignore", outFd ?? "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (outFd !== undefined) fs.closeSync(outFd);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

test("CLI: export > file → rm → create → import identical; rm --preserve-data → create --restore; snapshot create|ls|rollback|rm", async () => {
  const bot = "clidata";
  assert.equal((await cli(["create", bot])).code, 0);
  const t = await populate(bot, "cli");
  const file = path.join(s.dataRoot, "cli-export.tar.gz");
  const exp = await cli(["export", bot], { stdoutFile: file });
  assert.equal(exp.code, 0, exp.stderr);
  assert.match(exp.stderr, /exported/);
  assert.ok((await verifyArchiveFile(file)).entries > 5);
  assert.equal((await cli(["rm", bot])).code, 0);
  assert.equal((await cli(["create", bot])).code, 0);
  const imp = await cli(["import", bot, file]);
  assert.equal(imp.code, 0, imp.stderr);
  assert.match(imp.stdout, /imported \d+ entries/);
  assert.equal(await tree(bot), t);
  const bad = await cli(["import", bot, "/nonexistent.tar.gz"]);
  assert.notEqual(bad.code, 0);

  const v = await cli(["snapshot", "create", bot, "--name", "cli-v1"]);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /version 1 \(cli-v1\)/);
  await sh(bot, "echo changed > /data/run.sh");
  const rb = await cli(["snapshot", "rollback", bot, "1"]);
  assert.equal(rb.code, 0, rb.stderr);
  assert.match(rb.stdout, /the state before is version 2/);
  assert.equal(await tree(bot), t);
  const ls = await cli(["snapshot", "ls", bot]);
  assert.match(ls.stdout, /\*1\s+manual/);
  assert.match(ls.stdout, /2\s+rollback/);
  assert.equal((await cli(["snapshot", "rm", bot, "2"])).code, 0);
  assert.notEqual((await cli(["snapshot", "rm", bot, "2"])).code, 0);

  const rm = await cli(["rm", bot, "--preserve-data"]);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /its data is kept in .*clidata\.tar\.gz/);
  const cr = await cli(["create", bot, "--restore"]);
  assert.equal(cr.code, 0, cr.stderr);
  assert.match(cr.stderr, /restoring/);
  assert.equal(await tree(bot), t);
  assert.equal((await cli(["restore", bot])).code, 1, "restore without a backup succeeded");
  assert.equal((await cli(["rm", bot])).code, 0);
});

/** Kills the server with SIGKILL at `point` during `action`, restarts it (reconcile runs), returns once the bot runs again. */
async function crashDuring(point: string, bot: string, action: () => Promise<unknown>): Promise<void> {
  await s.stopServer();
  s.processEnv.MEMOH_CRASH_AT = point;
  await s.startServer();
  const pid = s.pid()!;
  await action().catch(() => undefined);
  // The process is gone (SIGKILL at the point), not merely failing the request.
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.throws(() => process.kill(pid, 0), `the server did not die at ${point}`);
  delete s.processEnv.MEMOH_CRASH_AT;
  await s.startServer();
  // Reconcile runs at startup; wait until the workspace answers.
  const until = Date.now() + 120_000;
  for (;;) {
    const st = await api("GET", `/bots/${bot}/container`);
    if (st.status === 200 && st.json.task === "running" && st.json.status === "running") {
      const probe = await api("POST", `/bots/${bot}/container/exec`, { json: { command: "true" } });
      if (probe.status === 200) return;
    }
    if (Date.now() > until) throw new Error(`${bot} does not run after the restart: ${st.text}\n${s.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

test("SIGKILL in the middle of a version create, a rollback and an import: after restart the workspace runs, /data is before or after, no orphaned snapshot", async () => {
  const bot = "crash1";
  await create(bot);
  const t1 = await populate(bot, "crash");
  await ok("POST", `/bots/${bot}/container/snapshots`, { json: { display_name: "v1" } });
  await sh(bot, "echo two > /data/two; rm /data/a/big.bin");
  const t2 = await tree(bot);

  await crashDuring("version:committed", bot, () => api("POST", `/bots/${bot}/container/snapshots`, { json: { display_name: "cut" } }));
  assert.equal(await tree(bot), t2, "the tree after a crashed version create");
  let list = await ok("GET", `/bots/${bot}/container/snapshots`);
  assert.deepEqual(list.versions.map((v: any) => v.version), [1, 2], "the committed version was not recorded");
  assert.deepEqual(await versionSnapshots(bot), list.versions.map((v: any) => v.snapshot).sort(), "an orphaned snapshot is left");

  await crashDuring("rollback:committed", bot, () => api("POST", `/bots/${bot}/container/snapshots/rollback`, { json: { version: 1 } }));
  const afterRollback = await tree(bot);
  assert.equal(afterRollback, t1, "a crashed rollback is finished (committed means after)");
  list = await ok("GET", `/bots/${bot}/container/snapshots`);
  assert.deepEqual(list.versions.map((v: any) => [v.version, v.source]), [[1, "manual"], [2, "manual"], [3, "rollback"]]);
  assert.deepEqual(await versionSnapshots(bot), list.versions.map((v: any) => v.snapshot).sort());

  // Import: cut in the staging (before), in the move out (before) and in the move in (after).
  await sh(bot, "rm -rf /data/* && mkdir /data/d1 /data/d2 && echo old1 > /data/d1/f && echo old2 > /data/d2/f && echo old3 > /data/f3");
  const before = await tree(bot);
  const incoming = await archive([
    { header: { name: "n1/", type: "directory", mode: 0o755 } },
    { header: { name: "n1/f", type: "file", size: 4, mode: 0o644 }, data: Buffer.from("new1") },
    { header: { name: "n2", type: "file", size: 4, mode: 0o600 }, data: Buffer.from("new2") },
    { header: { name: "n3", type: "file", size: 4, mode: 0o600 }, data: Buffer.from("new3") },
  ]);
  for (const [point, expect] of [
    ["import:staged", "before"],
    ["import:out", "before"],
    ["import:in", "after"],
  ] as const) {
    await crashDuring(point, bot, () => api("POST", `/bots/${bot}/container/data/import`, { raw: incoming }));
    const now = await tree(bot);
    const names = now.split("\n").filter(Boolean).map((l) => l.split(" ")[0]);
    if (expect === "before") assert.equal(now, before, `${point}: not the state before`);
    else assert.deepEqual(names, ["./n1", "./n1/f", "./n2", "./n3"], `${point}: not the state after:\n${now}`);
    assert.equal(await sh(bot, "ls -a / | grep -c memoh-import || true"), "0\n", `${point}: the staging dir is left`);
    if (expect === "after") {
      // Back to the old tree for the next round.
      await sh(bot, "rm -rf /data/* && mkdir /data/d1 /data/d2 && echo old1 > /data/d1/f && echo old2 > /data/d2/f && echo old3 > /data/f3");
    }
  }
  assert.deepEqual(fs.readdirSync(path.join(s.dataRoot, "data-ops")), [], "a journal is left");
  await ok("DELETE", `/bots/${bot}/container`);
  assert.deepEqual(await versionSnapshots(bot), []);
});

test("SIGKILL between a backup's read-back and its rename: after restart its temporary file is gone, nothing was deleted, the next delete with preserve works", async () => {
  const bot = "crash2";
  await create(bot);
  const t = await populate(bot, "tmpfile");
  const backups = path.join(s.dataRoot, "backups");
  const temps = () => (fs.existsSync(backups) ? fs.readdirSync(backups).filter((n) => n.startsWith(`.${bot}.tar.gz.tmp-`)) : []);
  await crashDuring("preserve:verified", bot, () => api("DELETE", `/bots/${bot}/container?preserve_data=true`));
  assert.deepEqual(temps(), [], "the backup's temporary file is left");
  assert.equal(fs.existsSync(path.join(backups, `${bot}.tar.gz`)), false);
  assert.equal(await tree(bot), t, "the workspace lost data");
  assert.deepEqual(fs.readdirSync(path.join(s.dataRoot, "data-ops")), [], "a journal is left");
  await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  assert.deepEqual(temps(), []);
  await create(bot, { restore_data: true });
  assert.equal(await tree(bot), t);
  await ok("DELETE", `/bots/${bot}/container`);
});

test("orphan recovery: a container gone with its rootfs left has /data backed up before reconcile rebuilds on it", async () => {
  const bot = "orphan1";
  await create(bot);
  const t = await populate(bot, "orphan");
  const containerId = `workspace-${bot}`;
  // Behind the orchestrator's back: the task and the container go, the rootfs stays.
  await s.env.ctr(["tasks", "kill", "-s", "SIGKILL", containerId], { check: false });
  for (let i = 0; i < 100; i++) {
    const r = await s.env.ctr(["tasks", "delete", containerId], { check: false });
    if (r.code === 0) break;
    await new Promise((r2) => setTimeout(r2, 100));
  }
  await s.env.ctr(["containers", "delete", "--keep-snapshot", containerId]);
  const backupFile = path.join(s.dataRoot, "backups", `${bot}.tar.gz`);
  assert.equal(fs.existsSync(backupFile), false);
  // Reconcile (at the server's start) sees the container missing: it backs up /data, then rebuilds.
  await s.stopServer();
  await s.startServer();
  const until = Date.now() + 120_000;
  for (;;) {
    const st = await api("GET", `/bots/${bot}/container`);
    if (fs.existsSync(backupFile) && st.status === 200 && st.json.task === "running" && st.json.status === "running") break;
    if (Date.now() > until) throw new Error(`no backup and rebuild: ${st.text}\n${s.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(fs.statSync(backupFile).mode & 0o777, 0o600);
  const v = await verifyArchiveFile(backupFile);
  assert.equal(v.entries, t.trim().split("\n").length + 1, "the backup does not hold the orphaned /data");
  assert.equal(await tree(bot), t, "the rebuilt workspace lost its data");
  const events = (await ok("GET", `/bots/${bot}/container/events?limit=100`)).events.map((e: any) => e.type);
  assert.ok(events.indexOf("orphan_backup") > events.indexOf("created"), `the backup came after the rebuild: ${events.join(",")}`);
  // The backup restores the same tree into a fresh workspace.
  await ok("DELETE", `/bots/${bot}/container`);
  await create(bot, { restore_data: true });
  assert.equal(await tree(bot), t);
  await ok("DELETE", `/bots/${bot}/container`);
});
