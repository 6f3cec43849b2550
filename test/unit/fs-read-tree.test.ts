// ReadTree through a real in-process agent, read with the host's BridgeClient (which
// checks the stream's order and byte counts), and the archive the export builds from it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import zlib from "node:zlib";
import tar from "tar-stream";
import { setTimeout as sleep } from "node:timers/promises";
import { BridgeClient, type TreeEvent } from "../../host/bridge/client.js";
import { ArchiveWriter, packBridgeTree } from "../../host/data/archive.js";
import { packReadTree } from "../../host/data/archive-tree.js";
import { extractArchive } from "../../host/data/archive-read.js";
import { create } from "@bufbuild/protobuf";
import { FileType, ReadTreeRequestSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { CAPABILITIES } from "../../agent/version.js";
import { createContext } from "../../agent/context.js";
import { readTree, type ReadTreeStats } from "../../agent/fs/read-tree.js";
import { MiB, TREE_MAX_DEPTH, TREE_MAX_ENTRIES, TREE_NAMES_HELD_BYTES } from "../../agent/limits.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { rejectsWith } from "./helpers/fs.js";

let t: TestAgent;
let c: BridgeClient;
let sockServer: net.Server;

before(async () => {
  t = await startTestAgent();
  c = new BridgeClient(t.agent.target);
});
after(async () => {
  c.close();
  sockServer?.close();
  await t.close();
});

/** A fresh directory under the data dir. */
function dirOf(name: string): string {
  const d = path.join(t.dataDir, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

async function collect(it: AsyncIterable<TreeEvent>): Promise<Array<TreeEvent & { data?: Buffer }>> {
  const out: Array<TreeEvent & { data?: Buffer }> = [];
  let file: (TreeEvent & { data?: Buffer }) | undefined;
  for await (const ev of it) {
    if (ev.kind === "data") {
      file!.data = Buffer.concat([file!.data!, ev.data]);
      continue;
    }
    if (ev.kind === "entry" && ev.type === FileType.FILE) {
      file = { ...ev, data: Buffer.alloc(0) };
      out.push(file);
      continue;
    }
    out.push(ev);
  }
  return out;
}

/** Open fds of this process (the agent runs in it) that lead into `dir`. */
function fdsInto(dir: string): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      const to = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (to.startsWith(dir)) out.push(to);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

test("the agent advertises read-tree", () => {
  assert.ok((CAPABILITIES as readonly string[]).includes("read-tree"));
});

test("ReadTree sends the whole tree depth first, sorted by name bytes, each file's exact bytes, modes and mtimes", async () => {
  const root = dirOf("tree");
  fs.mkdirSync(path.join(root, "b/deep/er"), { recursive: true });
  fs.mkdirSync(path.join(root, "a.d"));
  fs.mkdirSync(path.join(root, "empty"));
  const files: Record<string, Buffer> = {
    "a.d/x": randomBytes(10),
    "b/big.bin": randomBytes(3 * MiB + 17),
    "b/deep/er/leaf": Buffer.from("leaf\n"),
    "b/zero": Buffer.alloc(0),
    "top.txt": Buffer.from("top\n"),
  };
  for (const [rel, data] of Object.entries(files)) fs.writeFileSync(path.join(root, rel), data);
  fs.chmodSync(path.join(root, "top.txt"), 0o640);
  fs.chmodSync(path.join(root, "b"), 0o750);
  fs.utimesSync(path.join(root, "top.txt"), 1_600_000_000, 1_600_000_000);
  const name = Buffer.concat([Buffer.from("bad-"), Buffer.from([0xff, 0xfe])]);
  fs.writeFileSync(Buffer.concat([Buffer.from(root + "/"), name]), "latin");

  const evs = await collect(c.readTree("tree"));
  const paths = evs.map((e) => (e.kind === "entry" ? e.path.toString("latin1") : `?${e.kind}`));
  assert.deepEqual(paths, ["", "a.d", "a.d/x", "b", "b/big.bin", "b/deep", "b/deep/er", "b/deep/er/leaf", "b/zero", name.toString("latin1"), "empty", "top.txt"]);
  for (const e of evs) {
    assert.equal(e.kind, "entry");
    if (e.kind !== "entry") continue;
    const abs = Buffer.concat([Buffer.from(root), e.path.byteLength ? Buffer.from("/") : Buffer.alloc(0), e.path]);
    const st = fs.lstatSync(abs);
    assert.equal(e.mode, st.mode & 0o7777, `mode of ${e.path}`);
    assert.equal(e.mtimeMs, Math.trunc(st.mtimeMs), `mtime of ${e.path}`);
    assert.deepEqual([e.uid, e.gid], [st.uid, st.gid]);
    if (e.type === FileType.FILE) {
      assert.equal(e.size, st.size);
      assert.ok(e.data!.equals(fs.readFileSync(abs)), `bytes of ${e.path}`);
    } else assert.equal(e.type, FileType.DIRECTORY);
  }
  assert.deepEqual(fdsInto(root), []);
});

test("symlinks are sent as symlinks, never followed; FIFOs, sockets and devices come as skipped with the reason", async () => {
  const root = dirOf("links");
  fs.mkdirSync(path.join(root, "real"));
  fs.writeFileSync(path.join(root, "real/f"), "f");
  fs.symlinkSync("/etc", path.join(root, "to-etc"));
  fs.symlinkSync("real/f", path.join(root, "to-f"));
  fs.symlinkSync("nowhere", path.join(root, "dangling"));
  execFileSync("mkfifo", [path.join(root, "pipe")]);
  sockServer = net.createServer();
  await new Promise<void>((resolve) => sockServer.listen(path.join(root, "sock"), resolve));
  fs.symlinkSync("/dev/null", path.join(root, "dev-link"));

  const evs = await collect(c.readTree("links"));
  const by = new Map(evs.map((e) => [(e.kind === "entry" || e.kind === "skipped" ? e.path : Buffer.alloc(0)).toString(), e]));
  assert.deepEqual([...by.keys()], ["", "dangling", "dev-link", "pipe", "real", "real/f", "sock", "to-etc", "to-f"]);
  for (const [p, target] of [["to-etc", "/etc"], ["to-f", "real/f"], ["dangling", "nowhere"], ["dev-link", "/dev/null"]] as const) {
    const e = by.get(p)!;
    assert.ok(e.kind === "entry" && e.type === FileType.SYMLINK, `${p} is a symlink entry`);
    assert.equal(e.symlinkTarget.toString(), target);
  }
  const pipe = by.get("pipe")!;
  assert.ok(pipe.kind === "skipped" && /FIFO/.test(pipe.reason), JSON.stringify(pipe));
  const sock = by.get("sock")!;
  assert.ok(sock.kind === "skipped" && /socket/.test(sock.reason), JSON.stringify(sock));
  // Nothing under /etc was sent.
  assert.ok(!evs.some((e) => e.kind === "entry" && e.path.toString().startsWith("to-etc/")));
});

test("a device node comes as skipped, not as an error of the call", async () => {
  // A character device can be made only by root; /dev/null is one: the tree is /dev's null alone.
  const evs = await collect(c.readTree("/dev", { maxDepth: 1 }));
  const nul = evs.find((e) => e.kind === "skipped" && e.path.toString() === "null");
  assert.ok(nul && nul.kind === "skipped" && /character device/.test(nul.reason), JSON.stringify(nul));
});

test("a file that grows while it is read is sent at its size when opened; a file that shrinks is cut with a truncated record", async () => {
  const root = dirOf("growing");
  const base = randomBytes(32 * MiB);
  fs.writeFileSync(path.join(root, "grow.bin"), base);
  fs.writeFileSync(path.join(root, "shrink.bin"), base);

  // Grows: the entry says 32 MiB; 4 MiB are appended before any data is taken.
  let it = c.readTree("growing")[Symbol.asyncIterator]();
  let ev = (await it.next()).value as TreeEvent;
  assert.equal(ev.kind, "entry");
  ev = (await it.next()).value as TreeEvent;
  assert.ok(ev.kind === "entry" && ev.path.toString() === "grow.bin" && ev.size === base.byteLength);
  fs.appendFileSync(path.join(root, "grow.bin"), randomBytes(4 * MiB));
  const parts: Uint8Array[] = [];
  for (let r = await it.next(); !r.done && r.value.kind === "data"; r = await it.next()) parts.push(r.value.data);
  assert.ok(Buffer.concat(parts).equals(base), "exactly the first 32 MiB");
  await it.return(undefined);

  // Shrinks: cut to 1 KiB while the reader stalls after the entry.
  it = c.readTree("growing")[Symbol.asyncIterator]();
  for (let r = await it.next(); !r.done; r = await it.next()) if (r.value.kind === "entry" && r.value.path.toString() === "shrink.bin") break;
  fs.truncateSync(path.join(root, "shrink.bin"), 1024);
  let got = 0;
  let cut: TreeEvent | undefined;
  for (let r = await it.next(); !r.done; r = await it.next()) {
    if (r.value.kind === "data") got += r.value.data.byteLength;
    else {
      cut = r.value;
      break;
    }
  }
  await it.return(undefined);
  assert.ok(cut?.kind === "truncated", `a truncated record, got ${JSON.stringify(cut)}`);
  assert.equal(cut.sent, got);
  assert.ok(got < base.byteLength);
  assert.match(cut.reason, /shrank while read/);
  // The next walk sees the new size.
  const after = await collect(c.readTree("growing"));
  const s = after.find((e) => e.kind === "entry" && e.path.toString() === "shrink.bin");
  assert.ok(s?.kind === "entry" && s.size === 1024 && s.data!.equals(base.subarray(0, 1024)));
});

test("ReadTree waits for a slow reader and still delivers every byte", async () => {
  const root = dirOf("slow");
  const big = randomBytes(24 * MiB + 5);
  fs.writeFileSync(path.join(root, "big.bin"), big);
  fs.writeFileSync(path.join(root, "small.txt"), "after\n");
  const parts: Uint8Array[] = [];
  let stalled = false;
  let small: TreeEvent | undefined;
  let current = "";
  for await (const ev of c.readTree("slow")) {
    if (ev.kind === "entry") current = ev.path.toString();
    if (ev.kind === "data" && current === "big.bin") {
      parts.push(ev.data);
      if (!stalled) {
        // Long enough for the agent's in-flight bytes and the transport's windows to fill.
        stalled = true;
        await sleep(300);
      }
    } else if (ev.kind === "entry" && ev.path.toString() === "small.txt") small = ev;
  }
  assert.equal(Buffer.concat(parts).byteLength, big.byteLength);
  assert.ok(Buffer.concat(parts).equals(big), "the same bytes");
  assert.ok(small?.kind === "entry" && small.size === 6);
});

test("a cancelled ReadTree stops, closes every file it opened, and the agent keeps serving", async () => {
  const root = dirOf("many");
  for (let d = 0; d < 5; d++) {
    fs.mkdirSync(path.join(root, `d${d}`));
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(root, `d${d}`, `f${i}`), randomBytes(200_000));
  }
  const controller = new AbortController();
  let seen = 0;
  await rejectsWith(
    (async () => {
      for await (const ev of c.readTree("many", {}, { signal: controller.signal })) {
        if (ev.kind === "entry") seen++;
        if (seen === 20) controller.abort();
      }
    })(),
    Status.CANCELLED,
  );
  assert.ok(seen < 200, `stopped early (${seen} entries)`);
  for (let i = 0; i < 200 && fdsInto(root).length > 0; i++) await sleep(10);
  assert.deepEqual(fdsInto(root), []);
  assert.equal((await c.info()).pid, process.pid);
});

test("bad requests are INVALID_ARGUMENT or NOT_FOUND with a clear message; caps are applied", async () => {
  const root = dirOf("caps");
  fs.mkdirSync(path.join(root, "a/b/c"), { recursive: true });
  fs.writeFileSync(path.join(root, "a/file"), "x");
  const drain = async (p: AsyncIterable<TreeEvent>) => collect(p);
  await rejectsWith(drain(c.readTree("caps/a/file")), Status.INVALID_ARGUMENT, /not a directory/);
  await rejectsWith(drain(c.readTree("caps/none")), Status.NOT_FOUND, /caps\/none/);
  await rejectsWith(drain(c.readTree("")), Status.INVALID_ARGUMENT, /path is empty/);
  await rejectsWith(drain(c.readTree("bad\0path")), Status.INVALID_ARGUMENT, /NUL/);
  await rejectsWith(drain(c.readTree("caps", { maxDepth: TREE_MAX_DEPTH + 1 })), Status.INVALID_ARGUMENT, /max_depth 257 is over/);
  await rejectsWith(drain(c.readTree("caps", { maxEntries: TREE_MAX_ENTRIES + 1 })), Status.INVALID_ARGUMENT, /max_entries 1000001 is over/);
  await rejectsWith(drain(c.readTree("caps", { maxEntries: 3 })), Status.RESOURCE_EXHAUSTED, /more than 3 entries/);
  const shallow = await drain(c.readTree("caps", { maxDepth: 2 }));
  assert.deepEqual(
    shallow.map((e) => `${e.kind}:${e.kind === "entry" || e.kind === "skipped" ? e.path.toString() : ""}`),
    ["entry:", "entry:a", "skipped:a/b", "entry:a/file"],
  );
  const skip = shallow[2]!;
  assert.ok(skip.kind === "skipped" && /deeper than max_depth 2/.test(skip.reason));
});

/**
 * Runs the agent's ReadTree handler on a stand-in call that takes every message at
 * once, with `namesHeldBytes` as the call's allowance for names. The paths of its
 * entry records in order ("?path" for a skipped one), and what the call read.
 */
async function readTreeHere(
  dir: string,
  limits: { maxEntries?: number; maxDepth?: number } = {},
  namesHeldBytes?: number,
): Promise<{ records: string[]; stats: ReadTreeStats; error?: unknown }> {
  const records: string[] = [];
  const stats: ReadTreeStats = { entriesRead: 0, directoryReads: 0, peakNamesBytes: 0 };
  const call = {
    cancelled: false,
    destroyed: false,
    // Data messages come pre-encoded, without a `msg`.
    write(out: { msg?: { case?: string; value?: { path?: Uint8Array } } }, done: () => void): boolean {
      const m = out.msg;
      if (m?.case === "entry" || m?.case === "skipped") records.push(`${m.case === "skipped" ? "?" : ""}${Buffer.from(m.value!.path!).toString("latin1")}`);
      done();
      return true;
    },
    on() {
      return this;
    },
    off() {
      return this;
    },
  };
  const req = create(ReadTreeRequestSchema, { path: dir, ...limits });
  try {
    await readTree(createContext(t.dataDir), req, call as unknown as Parameters<typeof readTree>[2], { namesHeldBytes, stats });
  } catch (error) {
    return { records, stats, error };
  }
  return { records, stats };
}

/** Depth first, each directory's names in byte order: the order ReadTree promises. */
function expectedOrder(root: string, rel = ""): string[] {
  const dir = Buffer.from(rel === "" ? root : `${root}/${rel}`, "latin1");
  const names = fs.readdirSync(dir, { encoding: "buffer" }).sort(Buffer.compare);
  const out: string[] = rel === "" ? [""] : [];
  for (const n of names) {
    const childRel = rel === "" ? n.toString("latin1") : `${rel}/${n.toString("latin1")}`;
    out.push(childRel);
    if (fs.lstatSync(Buffer.from(`${root}/${childRel}`, "latin1")).isDirectory()) out.push(...expectedOrder(root, childRel));
  }
  return out;
}

test("a large directory under a small max_entries is RESOURCE_EXHAUSTED once max_entries names were read, before any is sent", async () => {
  const root = dirOf("wide");
  const count = 5_000;
  for (let i = 0; i < count; i++) fs.closeSync(fs.openSync(path.join(root, `entry-with-a-long-name-${"x".repeat(100)}-${i}`), "w"));
  await rejectsWith(collect(c.readTree("wide", { maxEntries: 5 })), Status.RESOURCE_EXHAUSTED, /wide holds more than 5 entries \(max_entries\)/);

  const { records, stats, error } = await readTreeHere("wide", { maxEntries: 5 });
  assert.match(String(error), /wide holds more than 5 entries \(max_entries\)/);
  // The root's entry was sent: 4 more fit, and the 5th name read shows the directory cannot.
  assert.equal(stats.entriesRead, 5, "the directory was read no further than max_entries");
  assert.deepEqual(records, [""], "nothing of a directory that cannot fit is sent");
  assert.equal(stats.directoryReads, 1);
});

test("max_entries counts the entries still due from the directories above: exactly max_entries pass, one fewer is refused", async () => {
  const root = dirOf("due");
  fs.mkdirSync(path.join(root, "a"));
  for (const f of ["a/1", "a/2", "a/3", "b", "c"]) fs.writeFileSync(path.join(root, f), f);
  const all = ["", "a", "a/1", "a/2", "a/3", "b", "c"];
  assert.deepEqual((await readTreeHere("due", { maxEntries: all.length })).records, all);
  // Reading a: 2 sent, b and c due, so a's 3 names pass 6.
  const short = await readTreeHere("due", { maxEntries: all.length - 1 });
  assert.match(String(short.error), /more than 6 entries/);
  assert.deepEqual(short.records, ["", "a"]);
  await rejectsWith(collect(c.readTree("due", { maxEntries: all.length - 1 })), Status.RESOURCE_EXHAUSTED, /more than 6 entries/);
});

test("ReadTree holds a bounded amount of names: larger directories are read in sorted batches and the order is the same", async () => {
  const root = dirOf("batches");
  // Subdirectories sort between the files, so the walk goes down with names of the
  // directories above still unsent.
  const fill = (dir: string, files: number) => {
    fs.mkdirSync(dir, { recursive: true });
    for (let i = 0; i < files; i++) fs.writeFileSync(path.join(dir, `${randomBytes(6).toString("hex")}-${i}`), "");
  };
  fill(root, 1500);
  for (const sub of ["5-a", "8-b", "8-b/7-c", "8-b/7-c/9-d"]) fill(path.join(root, sub), 600);
  fs.writeFileSync(Buffer.concat([Buffer.from(`${root}/8-b/`), Buffer.from([0x80, 0xff])]), "not UTF-8");
  const expected = expectedOrder(root);
  assert.equal(expected.length, 1 + 1500 + 4 + 4 * 600 + 1);

  const whole = await readTreeHere("batches");
  assert.equal(whole.error, undefined);
  assert.deepEqual(whole.records, expected);
  assert.equal(whole.stats.directoryReads, 5, "each directory read once when its names fit");
  assert.ok(whole.stats.peakNamesBytes <= 2 * TREE_NAMES_HELD_BYTES);

  const allowance = 16 * 1024;
  assert.ok(whole.stats.peakNamesBytes > 2 * allowance, `the tree's names (${whole.stats.peakNamesBytes} bytes) are more than the small allowance`);
  const small = await readTreeHere("batches", {}, allowance);
  assert.equal(small.error, undefined);
  assert.deepEqual(small.records, expected, "the same records in the same order");
  assert.ok(small.stats.peakNamesBytes <= 2 * allowance, `held ${small.stats.peakNamesBytes} bytes of names`);
  assert.ok(small.stats.directoryReads > 5, `read in batches (${small.stats.directoryReads} reads)`);

  // max_entries holds exactly across batches and dropped names read again.
  assert.equal((await readTreeHere("batches", { maxEntries: expected.length }, allowance)).error, undefined);
  const over = await readTreeHere("batches", { maxEntries: expected.length - 1 }, allowance);
  assert.match(String(over.error), new RegExp(`more than ${expected.length - 1} entries`));
});

/** The entries of a tar.gz: name, type, mode, mtime (s), link target and content. */
async function entriesOf(gz: Buffer): Promise<string[]> {
  const extract = tar.extract();
  const out: string[] = [];
  const feed = new PassThrough();
  feed.end(zlib.gunzipSync(gz));
  feed.pipe(extract);
  for await (const e of extract) {
    const parts: Buffer[] = [];
    for await (const ch of e) parts.push(ch as Buffer);
    const h = e.header;
    out.push(`${h.name} ${h.type} ${(h.mode ?? 0).toString(8)} ${Math.floor((h.mtime?.getTime() ?? 0) / 1000)} ${h.linkname ?? ""} ${Buffer.concat(parts).toString("base64")}`);
  }
  return out;
}

async function archive(pack: (w: ArchiveWriter) => Promise<void>): Promise<{ gz: Buffer; skipped: string[] }> {
  const sink = new PassThrough();
  const parts: Buffer[] = [];
  sink.on("data", (d: Buffer) => parts.push(d));
  const w = new ArchiveWriter(sink);
  await pack(w);
  const res = await w.finish();
  return { gz: Buffer.concat(parts), skipped: res.skipped };
}

test("the ReadTree archive holds the same entries as the ListDir + ReadRaw archive", async () => {
  const root = dirOf("same");
  fs.mkdirSync(path.join(root, "d/e"), { recursive: true });
  fs.writeFileSync(path.join(root, "d/e/f.txt"), "hello\n");
  fs.writeFileSync(path.join(root, "d/bin"), randomBytes(300_000));
  fs.chmodSync(path.join(root, "d/bin"), 0o600);
  fs.symlinkSync("d/e/f.txt", path.join(root, "link"));
  execFileSync("mkfifo", [path.join(root, "fifo")]);
  fs.writeFileSync(Buffer.from(`${root}/not-utf8-\xff`, "latin1"), "x");
  const abs = path.join(t.dataDir, "same");
  const ours = await archive((w) => packReadTree(c, w, { dir: abs }));
  const old = await archive(async (w) => {
    const st = fs.statSync(abs);
    await w.directory(".", st.mode, st.mtimeMs);
    await packBridgeTree(c, w, { dir: abs });
  });
  const [a, b] = [await entriesOf(ours.gz), await entriesOf(old.gz)];
  assert.deepEqual([...a].sort(), [...b].sort());
  // The name that is not UTF-8 is archived by its bytes (a lossy path for other tools); only the FIFO is left out.
  assert.equal(a.length, 7);
  assert.ok(a.some((e) => e.startsWith("not-utf8-\ufffd file")));
  assert.equal(ours.skipped.length, 1);
  assert.ok(ours.skipped.some((s) => /fifo: .*FIFO/.test(s)));
});

test("asked for hardlinks, ReadTree sends a file with several links once and its other names as links to the first; unasked, whole every time", async () => {
  const root = dirOf("hard-links");
  fs.mkdirSync(path.join(root, "sub"));
  fs.writeFileSync(path.join(root, "a.bin"), randomBytes(70_000));
  fs.linkSync(path.join(root, "a.bin"), path.join(root, "sub/b.bin"));
  fs.linkSync(path.join(root, "a.bin"), path.join(root, "c.bin"));
  fs.writeFileSync(path.join(root, "single"), "one link\n");
  fs.chownSync(path.join(root, "a.bin"), 1000, 1001);
  const abs = path.join(t.dataDir, "hard-links");
  const files = (evs: Array<TreeEvent & { data?: Buffer }>) =>
    evs.filter((e) => e.kind === "entry" && e.type === FileType.FILE).map((e) => e as Extract<TreeEvent, { kind: "entry" }> & { data?: Buffer });

  const linked = files(await collect(c.readTree(abs, { hardlinks: true })));
  assert.deepEqual(
    linked.map((e) => `${e.path.toString()} ${e.size} ${e.data?.byteLength} ${e.hardlinkTarget.toString()} ${e.uid}:${e.gid}`),
    ["a.bin 70000 70000  1000:1001", "c.bin 0 0 a.bin 1000:1001", "single 9 9  0:0", "sub/b.bin 0 0 a.bin 1000:1001"],
  );
  const whole = files(await collect(c.readTree(abs)));
  assert.deepEqual(
    whole.map((e) => `${e.path.toString()} ${e.size} ${e.data?.byteLength} ${e.hardlinkTarget.byteLength}`),
    ["a.bin 70000 70000 0", "c.bin 70000 70000 0", "single 9 9 0", "sub/b.bin 70000 70000 0"],
  );

  // The export built from it holds the bytes once, and restores one file under three names.
  const ours = await archive((w) => packReadTree(c, w, { dir: abs }));
  const entries = await entriesOf(ours.gz);
  assert.ok(entries.some((e) => e.startsWith("c.bin link ") && e.includes(" a.bin ")), entries.join("\n"));
  const dest = fs.mkdtempSync(path.join(path.dirname(t.dataDir), "links-out-"));
  await extractArchive(Readable.from([ours.gz]), dest);
  const first = fs.statSync(path.join(dest, "a.bin"));
  assert.equal(first.nlink, 3);
  assert.equal(fs.statSync(path.join(dest, "sub/b.bin")).ino, first.ino);
  assert.equal(`${first.uid}:${first.gid}`, "1000:1001");
  assert.deepEqual(fs.readFileSync(path.join(dest, "c.bin")), fs.readFileSync(path.join(root, "a.bin")));
});
