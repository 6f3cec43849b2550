// `memoh-workspace cp` against what a workspace may answer: the paths of a listing
// never name a file outside the local destination, a download that breaks off leaves
// the local file as it was, and entries that are not copied are each reported. The
// end-to-end cases run the real CLI process against a small HTTP server that answers
// like the API (and then misbehaves as a broken stream or a compromised agent would).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { localPathFor } from "../../host/cli/copy.js";
import { CliError } from "../../host/cli/client.js";

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "memoh-workspace.mjs");

test("localPathFor: relative paths below the destination map to it", () => {
  const dst = path.resolve("/tmp/dst");
  assert.equal(localPathFor(dst, "a.txt"), path.join(dst, "a.txt"));
  assert.equal(localPathFor(dst, "sub/deeper/b.bin"), path.join(dst, "sub", "deeper", "b.bin"));
  assert.equal(localPathFor(dst, "..x/...y/.z"), path.join(dst, "..x", "...y", ".z"));
  assert.equal(localPathFor("rel/dst", "f"), path.resolve("rel/dst", "f"));
  assert.equal(localPathFor("/", "etc-copy/f"), "/etc-copy/f");
});

test("localPathFor: absolute paths, empty, '.' and '..' components and NULs are refused", () => {
  const dst = "/tmp/dst";
  for (const bad of ["../../../evil.txt", "..", "a/../../b", "a/..", "/etc/passwd", "/", "", ".", "./a", "a/./b", "a//b", "a/", "a\0b"]) {
    assert.throws(() => localPathFor(dst, bad), (err: unknown) => err instanceof CliError && /refusing the workspace's entry/.test(err.message), `for ${JSON.stringify(bad)}`);
  }
});

// --- the real CLI against a mock API ---

interface Mock {
  url: string;
  uploads: Map<string, Buffer>;
  mkdirs: string[];
  /** What GET fs, fs/list and fs/download answer, by workspace path. */
  stat: Map<string, string>;
  listing: Map<string, Array<{ path: string; type: string; symlink_target?: string | null }>>;
  /** A file, or part of one whose connection then breaks (or, with `stall`, stays open). */
  files: Map<string, Buffer | { announce: number; send: Buffer; stall?: boolean }>;
}

let mock: Mock;
let exportWhole = false;
let server: http.Server;
let work: string;

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "cli-copy-"));
  const m: Omit<Mock, "url"> = { uploads: new Map(), mkdirs: [], stat: new Map(), listing: new Map(), files: new Map() };
  server = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    const p = u.searchParams.get("path") ?? "";
    const json = (status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    const notFound = () => json(404, { error: { code: "not_found", message: `${p}: no such file` } });
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (u.pathname === "/bots/b/container/fs") {
        const type = m.stat.get(p);
        return type ? json(200, { path: p, name: path.posix.basename(p), type, mode: 0o644, size: 0, mtime: new Date(0).toISOString(), symlink_target: null }) : notFound();
      }
      if (u.pathname === "/bots/b/container/fs/list") {
        const entries = m.listing.get(p);
        return entries ? json(200, { entries: entries.map((e) => ({ name: path.posix.basename(e.path), mode: 0o644, size: 0, mtime: new Date(0).toISOString(), symlink_target: null, ...e })), total: entries.length, has_more: false }) : notFound();
      }
      if (u.pathname === "/bots/b/container/fs/download") {
        const f = m.files.get(p);
        if (f === undefined) return notFound();
        if (Buffer.isBuffer(f)) return res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(f.length) }).end(f);
        // Announces the whole file, sends part of it, then the connection breaks.
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(f.announce) });
        res.write(f.send, () => void (f.stall || setTimeout(() => res.socket?.destroy(), 50)));
        return;
      }
      if (u.pathname === "/bots/b/container/fs/mkdir") {
        m.mkdirs.push((JSON.parse(body.toString()) as { path: string }).path);
        return json(200, { ok: true });
      }
      if (u.pathname === "/bots/b/container/fs/upload") {
        const text = body.toString("latin1");
        const name = /name="path"\r\n\r\n([^\r]*)\r\n/.exec(text)![1]!;
        const start = text.indexOf("\r\n\r\n", text.indexOf('name="file"')) + 4;
        const end = text.lastIndexOf("\r\n--");
        m.uploads.set(name, body.subarray(start, end));
        return json(200, { ok: true });
      }
      if (u.pathname === "/bots/b/container/data/export") {
        // A complete archive when exportWhole is set; otherwise part of one, then the connection breaks.
        res.writeHead(200, { "content-type": "application/gzip" });
        if (exportWhole) return res.end(Buffer.from("a whole archive"));
        res.write(Buffer.alloc(64 * 1024, 1), () => setTimeout(() => res.socket?.destroy(), 50));
        return;
      }
      if (u.pathname === "/bots/b/container/exec") {
        // NDJSON whose bytes are cut inside a multi-byte character, sent apart.
        const bytes = Buffer.from(`${JSON.stringify({ stdout: "grüße ✓\n" })}\n${JSON.stringify({ exit: { code: 0, timed_out: false } })}\n`);
        const cut = bytes.indexOf(Buffer.from("✓")) + 1;
        res.writeHead(200, { "content-type": "application/x-ndjson" });
        res.write(bytes.subarray(0, cut), () => setTimeout(() => res.end(bytes.subarray(cut)), 100));
        return;
      }
      json(404, { error: { code: "not_found", message: `no route ${u.pathname}` } });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  mock = { ...m, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(work, { recursive: true, force: true });
});

function cli(args: string[], started?: (child: ReturnType<typeof spawn>) => void): Promise<{ code: number; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, MEMOH_URL: mock.url, MEMOH_TOKEN: "t" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? -1, signal, stdout, stderr }));
    started?.(child);
  });
}

test("cp BOT:/dir LOCAL: a listing entry that climbs out of LOCAL is refused and nothing is written", async () => {
  const dst = path.join(work, "hostile", "a", "b", "c");
  mock.stat.set("/data/evil", "directory");
  mock.listing.set("/data/evil", [
    { path: "fine.txt", type: "file" },
    { path: "../../../evil.txt", type: "file" },
  ]);
  mock.files.set("/data/evil/fine.txt", Buffer.from("fine\n"));
  mock.files.set("/data/evil/../../../evil.txt", Buffer.from("pwned\n"));
  const r = await cli(["cp", "b:/data/evil", dst]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /refusing the workspace's entry "\.\.\/\.\.\/\.\.\/evil\.txt"/);
  assert.equal(fs.existsSync(path.join(work, "hostile", "evil.txt")), false, "a file was written outside the destination");
  assert.equal(fs.existsSync(path.join(dst, "fine.txt")), false, "the copy started before every path was checked");
  mock.listing.set("/data/evil", [{ path: "/etc/evil.txt", type: "file" }]);
  const abs = await cli(["cp", "b:/data/evil", dst]);
  assert.notEqual(abs.code, 0);
  assert.match(abs.stderr, /an absolute path/);
});

test("cp BOT:/file LOCAL: a download that breaks off leaves the existing local file unchanged, no temp file, and names the path", async () => {
  const dir = path.join(work, "broken");
  fs.mkdirSync(dir);
  const local = path.join(dir, "keep.txt");
  fs.writeFileSync(local, "the user's data\n");
  mock.stat.set("/data/big.bin", "file");
  mock.files.set("/data/big.bin", { announce: 1 << 20, send: Buffer.alloc(64 * 1024, 7) });
  const r = await cli(["cp", "b:/data/big.bin", local]);
  assert.notEqual(r.code, 0);
  assert.ok(r.stderr.includes(`download of b:/data/big.bin to ${local} failed`), r.stderr);
  assert.match(r.stderr, /left unchanged/);
  assert.equal(fs.readFileSync(local, "utf8"), "the user's data\n");
  assert.deepEqual(fs.readdirSync(dir), ["keep.txt"], "a temp file was left");

  // A new file is not created half-written either.
  const fresh = path.join(dir, "fresh.bin");
  const f = await cli(["cp", "b:/data/big.bin", fresh]);
  assert.notEqual(f.code, 0);
  assert.match(f.stderr, /not created/);
  assert.deepEqual(fs.readdirSync(dir), ["keep.txt"]);
});

test("cp BOT:/file LOCAL: Ctrl-C mid-download removes the temp file and leaves the local file unchanged", async () => {
  const dir = path.join(work, "interrupted");
  fs.mkdirSync(dir);
  const local = path.join(dir, "keep.txt");
  fs.writeFileSync(local, "the user's data\n");
  mock.stat.set("/data/slow.bin", "file");
  mock.files.set("/data/slow.bin", { announce: 1 << 20, send: Buffer.alloc(64 * 1024, 7), stall: true });
  const r = await cli(["cp", "b:/data/slow.bin", local], (child) => {
    const poll = setInterval(() => {
      if (fs.readdirSync(dir).some((n) => n.endsWith(".part") && fs.statSync(path.join(dir, n)).size > 0)) {
        clearInterval(poll);
        child.kill("SIGINT");
      }
    }, 20);
    child.on("close", () => clearInterval(poll));
  });
  assert.equal(r.signal, "SIGINT", r.stderr);
  assert.equal(fs.readFileSync(local, "utf8"), "the user's data\n");
  assert.deepEqual(fs.readdirSync(dir), ["keep.txt"], "a temp file was left");
});

test("cp BOT:/file LOCAL: a complete download replaces the local file and keeps its permission bits", async () => {
  const local = path.join(work, "replace.sh");
  fs.writeFileSync(local, "old\n", { mode: 0o750 });
  fs.chmodSync(local, 0o750);
  mock.stat.set("/data/new.sh", "file");
  mock.files.set("/data/new.sh", Buffer.from("#!/bin/sh\necho new\n"));
  const r = await cli(["cp", "b:/data/new.sh", local]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.readFileSync(local, "utf8"), "#!/bin/sh\necho new\n");
  assert.equal(fs.statSync(local).mode & 0o777, 0o750);
  assert.deepEqual(fs.readdirSync(work).filter((n) => n.includes(".part")), []);
});

test("cp BOT:/dir LOCAL: the workspace's symlinks and special files are skipped with a warning each; the files are copied, exit 0", async () => {
  const dst = path.join(work, "down");
  mock.stat.set("/data/mixed", "directory");
  mock.listing.set("/data/mixed", [
    { path: "a.txt", type: "file" },
    { path: "link", type: "symlink", symlink_target: "/etc/passwd" },
    { path: "sub", type: "directory" },
    { path: "sub/fifo", type: "other" },
    { path: "sub/b.txt", type: "file" },
  ]);
  mock.files.set("/data/mixed/a.txt", Buffer.from("a\n"));
  mock.files.set("/data/mixed/sub/b.txt", Buffer.from("b\n"));
  const r = await cli(["cp", "b:/data/mixed", dst]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /skipped b:\/data\/mixed\/link: a symlink \(to "\/etc\/passwd"\)/);
  assert.match(r.stderr, /skipped b:\/data\/mixed\/sub\/fifo: not a regular file or directory \(other\)/);
  assert.equal(r.stderr.trim().split("\n").length, 2, r.stderr);
  assert.equal(fs.readFileSync(path.join(dst, "a.txt"), "utf8"), "a\n");
  assert.equal(fs.readFileSync(path.join(dst, "sub", "b.txt"), "utf8"), "b\n");
  assert.equal(fs.existsSync(path.join(dst, "link")), false);
});

test("cp LOCAL_DIR BOT:/dir: local symlinks and special files are skipped with a warning each; the files are uploaded, exit 0", async () => {
  const src = path.join(work, "up");
  fs.mkdirSync(path.join(src, "sub"), { recursive: true });
  fs.writeFileSync(path.join(src, "a.txt"), "a\n");
  fs.writeFileSync(path.join(src, "sub", "b.txt"), "b\n");
  fs.symlinkSync("a.txt", path.join(src, "link"));
  fs.symlinkSync("/nowhere", path.join(src, "sub", "dangling"));
  const fifo = spawn("mkfifo", [path.join(src, "sub", "pipe")]);
  assert.equal(await new Promise((resolve) => fifo.on("close", resolve)), 0);
  const r = await cli(["cp", src, "b:/data/up"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(r.stderr.includes(`skipped ${path.join(src, "link")}: a symlink`), r.stderr);
  assert.ok(r.stderr.includes(`skipped ${path.join(src, "sub", "dangling")}: a symlink`), r.stderr);
  assert.ok(r.stderr.includes(`skipped ${path.join(src, "sub", "pipe")}: a FIFO`), r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 3, r.stderr);
  assert.deepEqual([...mock.uploads.keys()].filter((k) => k.startsWith("/data/up/")).sort(), ["/data/up/a.txt", "/data/up/sub/b.txt"]);
  assert.equal(mock.uploads.get("/data/up/a.txt")?.toString(), "a\n");
});

test("exec: a chunk boundary inside a multi-byte character of the output keeps the character", async () => {
  const r = await cli(["exec", "b", "--", "echo"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, "grüße ✓\n");
});

test("export --output: an export that breaks off leaves an earlier archive of that name unchanged and no temp file; a whole one replaces it; a new one is 0600", async () => {
  const dir = path.join(work, "export");
  fs.mkdirSync(dir);
  const out = path.join(dir, "data.tar.gz");
  fs.writeFileSync(out, "yesterday's archive");
  const r = await cli(["export", "b", "--output", out]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /the export broke off after \d+ bytes/);
  assert.match(r.stderr, /left unchanged/);
  assert.equal(fs.readFileSync(out, "utf8"), "yesterday's archive");
  assert.deepEqual(fs.readdirSync(dir), ["data.tar.gz"], "a temp file was left");
  exportWhole = true;
  const whole = await cli(["export", "b", "--output", out]);
  assert.equal(whole.code, 0, whole.stderr);
  assert.equal(fs.readFileSync(out, "utf8"), "a whole archive");
  assert.deepEqual(fs.readdirSync(dir), ["data.tar.gz"]);
  // A new archive is the owner's only, as before.
  const fresh = path.join(dir, "new.tar.gz");
  assert.equal((await cli(["export", "b", "--output", fresh])).code, 0);
  assert.equal(fs.statSync(fresh).mode & 0o777, 0o600);
  exportWhole = false;
});
