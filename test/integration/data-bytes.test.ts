// Workspace data whose names are not text, end to end through the real server process
// (containerd, CNI, PostgreSQL, HTTP): a file named with latin1 bytes, a directory and a
// file inside it likewise, a symlink whose target is not UTF-8, and a file below a path
// longer than PATH_MAX survive delete with preserve → create with restore_data, the
// on-demand restore, and export → import, byte for byte (names, contents, modes, link
// targets). A FIFO is not data: the backup leaves it out and says so. Owners (also
// ids larger than a plain tar header holds) and hard links come back as they were.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { apiClient } from "./env/api-client.js";
import { startServerEnv, type ServerEnv } from "./env/server.js";

const run = promisify(execFile);
let s: ServerEnv;

before(async () => {
  s = await startServerEnv({ postgres: true });
});

after(async () => {
  await s?.close();
});

const { api, ok, sh } = apiClient(() => s);

/**
 * Every entry under /data, names and link targets as hex of their bytes: path, type,
 * mode, sha256 or target. Walked with cd (relative names), since no tool can name a path
 * longer than PATH_MAX; FIFOs are left out (not data).
 */
const TREE = `hex() { od -An -v -tx1 | tr -d ' \\n'; }
walk() {
  for f in * .[!.]* ..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    h=$(printf '%s' "$1$f" | hex)
    if [ -L "$f" ]; then echo "$h link $(readlink "$f" | hex)"
    elif [ -d "$f" ]; then echo "$h dir $(stat -c %a "$f")"; (cd -P "$f" && walk "$1$f/") || exit 1
    elif [ -f "$f" ]; then echo "$h file $(stat -c %a "$f") $(sha256sum < "$f" | cut -c1-64)"; fi
  done
}
cd /data && walk ""`;

const tree = (bot: string) => sh(bot, TREE);

const LONG = "d".repeat(200);
const LEVELS = 22; // 22 × 201 bytes below /data: longer than PATH_MAX (4095)

/** Non-UTF-8 names and link targets, and a file and a symlink below a path longer than PATH_MAX. */
async function populate(bot: string): Promise<string> {
  await sh(
    bot,
    `set -e; cd /data
     f=$(printf 'caf\\351.txt'); printf 'latin1 name\\n' > "$f"; chmod 640 "$f"
     d=$(printf 'd\\377ir'); mkdir "$d"; chmod 750 "$d"; printf '\\000\\001\\377' > "$d/$(printf 'in\\376.bin')"; chmod 600 "$d/$(printf 'in\\376.bin')"
     ln -s "$(printf 'tar\\377get/\\351')" badlink
     ln -s plain-target "$(printf 'ok\\351link')"
     mkfifo pipe
     for i in $(seq 1 ${LEVELS}); do mkdir ${LONG}; cd -P ${LONG}; done
     f=$(printf 'deep\\351.txt'); printf 'deep\\n' > "$f"; chmod 604 "$f"
     ln -s "$(printf '../x\\351')" deeplink`,
  );
  const t = await tree(bot);
  const lines = t.trim().split("\n");
  assert.equal(lines.length, 5 + LEVELS + 2, t);
  assert.ok(lines.some((l) => l.startsWith(Buffer.from("caf\xe9.txt", "latin1").toString("hex") + " file 640 ")), t);
  assert.ok(lines.some((l) => l.startsWith(`${Buffer.from("badlink").toString("hex")} link ${Buffer.from("tar\xffget/\xe9\n", "latin1").toString("hex")}`)), t);
  const deepest = lines.map((l) => l.split(" ")[0]!.length / 2).reduce((a, b) => Math.max(a, b), 0);
  assert.ok(deepest > 4096, `the deepest path has ${deepest} bytes`);
  return t;
}

test("delete with preserve → create with restore_data, and the on-demand restore: non-UTF-8 names and targets, paths over PATH_MAX come back byte for byte", async () => {
  const bot = "bytes1";
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  const t = await populate(bot);

  const del = await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  assert.equal(del.deleted, true);
  const backupFile = path.join(s.dataRoot, "backups", `${bot}.tar.gz`);
  assert.equal(del.backup.path, backupFile);
  // The FIFO is the only thing left out, and the result says so.
  assert.equal(del.backup.skipped.length, 1, JSON.stringify(del.backup.skipped));
  assert.match(del.backup.skipped[0], /^pipe: a FIFO/);
  // Still a tar.gz other tools read: GNU tar lists every entry.
  const { stdout } = await run("tar", ["-tzf", backupFile], { maxBuffer: 64 << 20 });
  assert.equal(stdout.trim().split("\n").length, 1 + 5 + LEVELS + 2, "root, 5 entries (the FIFO left out), the deep dirs, the deep file and link");

  await ok("POST", `/bots/${bot}/container`, { json: { restore_data: true } });
  assert.equal(await tree(bot), t, "the restored tree differs");
  assert.equal(fs.existsSync(backupFile), false);

  // On demand, into a workspace that exists (its /data is swapped out, the backup's in).
  await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  await sh(bot, "echo fresh > /data/fresh");
  const restored = await ok("POST", `/bots/${bot}/container/data/restore`);
  assert.equal(restored.entries, 1 + 5 + LEVELS + 2);
  assert.equal(await tree(bot), t, "the tree restored on demand differs");
  await ok("DELETE", `/bots/${bot}/container`);
});

test("export of a running workspace → import into a fresh one: non-UTF-8 names and targets, paths over PATH_MAX identical", async () => {
  const bot = "bytes2";
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  const t = await populate(bot);
  const exported = await api("POST", `/bots/${bot}/container/data/export`);
  assert.equal(exported.status, 200, exported.text);
  await ok("DELETE", `/bots/${bot}/container`);
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  const imported = await ok("POST", `/bots/${bot}/container/data/import`, { raw: exported.body });
  assert.equal(imported.entries, 1 + 5 + LEVELS + 2);
  assert.equal(await tree(bot), t, "the imported tree differs");

  // Stopped: the export comes from the snapshot mounted on the host, with the same entries.
  await ok("POST", `/bots/${bot}/container/stop`);
  const fromSnapshot = await api("POST", `/bots/${bot}/container/data/export`);
  assert.equal(fromSnapshot.status, 200, fromSnapshot.text);
  await ok("DELETE", `/bots/${bot}/container`);
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  await ok("POST", `/bots/${bot}/container/data/import`, { raw: fromSnapshot.body });
  assert.equal(await tree(bot), t, "the tree imported from a stopped workspace's export differs");
  await ok("DELETE", `/bots/${bot}/container`);
});

/** Owners and link counts of what ownersAndLinks made, and whether the two names are one file. */
const OWNERS = `cd /data && echo ". $(stat -c '%u:%g' .)"; for p in home home/f home/l hl big; do echo "$p $(stat -c '%u:%g %h' "$p")"; done
[ "$(stat -c %i home/f)" = "$(stat -c %i hl)" ] && echo "home/f and hl are one file"`;
const OWNED = [". 1000:1001", "home 1000:1001 2", "home/f 1000:1001 2", "home/l 1002:1003 1", "hl 1000:1001 2", "big 300000:300001 1", "home/f and hl are one file"].join("\n");

test("owners (also past the ustar range, and of /data itself) and hard links survive export → import of a running workspace and delete with preserve → restore", async () => {
  const bot = "owners1";
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  await sh(
    bot,
    `set -e; cd /data
     mkdir home; echo mine > home/f; ln -s f home/l; ln home/f hl; echo big > big
     chown -R 1000:1001 home; chown -h 1002:1003 home/l; chown 300000:300001 big; chown 1000:1001 /data`,
  );
  assert.equal((await sh(bot, OWNERS)).trim(), OWNED);

  // Running: the export comes through ReadTree; the shared file's bytes are archived once.
  const exported = await api("POST", `/bots/${bot}/container/data/export`);
  assert.equal(exported.status, 200, exported.text);
  const archive = path.join(s.dataRoot, "owners-export.tar.gz");
  fs.writeFileSync(archive, exported.body);
  const { stdout: listing } = await run("tar", ["-tvzf", archive, "--numeric-owner"]);
  // Names are archived in byte order: "hl" comes before "home/f" and holds the bytes.
  assert.match(listing, /^-rw.* 1000\/1001 +5 .* hl$/m, listing);
  assert.match(listing, /^hrw.* 1000\/1001 +0 .* home\/f link to hl$/m, listing);
  await ok("DELETE", `/bots/${bot}/container`);
  await ok("POST", `/bots/${bot}/container`, { json: {} });
  await ok("POST", `/bots/${bot}/container/data/import`, { raw: exported.body });
  assert.equal((await sh(bot, OWNERS)).trim(), OWNED, "after export → import");

  // The backup of a delete comes from the snapshot on the host.
  await ok("DELETE", `/bots/${bot}/container?preserve_data=true`);
  await ok("POST", `/bots/${bot}/container`, { json: { restore_data: true } });
  assert.equal((await sh(bot, OWNERS)).trim(), OWNED, "after delete with preserve → restore");
  await ok("DELETE", `/bots/${bot}/container`);
});
