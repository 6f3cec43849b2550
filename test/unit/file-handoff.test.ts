// The host's side of ReadRaw's handoff against real processes: a stand-in for a
// workspace's init whose child holds files open, as tini and the agent do. The host
// reaches only a regular file on a disk or memory file system, the one named by device
// and inode, held by a process it found itself.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { findInNamespace, reopenHandedOff } from "../../host/workspace/file-handoff.js";
import type { FileHandoff } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "file-handoff-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

// The holder opens each file it is given (what is not a regular file with O_PATH, as a
// workspace process may: a FIFO without a writer, a device the workspace may not open)
// and prints its pid and, per file, the fd with its device and inode.
const HOLDER = `
const fs = require("node:fs");
const held = process.argv.slice(1).map((p) => {
  const fd = fs.openSync(p, fs.statSync(p).isFile() ? "r" : 0o10000000);
  const st = fs.fstatSync(fd, { bigint: true });
  return { fd, dev: String(st.dev), ino: String(st.ino) };
});
console.log(JSON.stringify({ pid: process.pid, held }));
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
`;
// The init: starts the holder as its child and goes when its stdin closes, as the holder does.
const INIT = `
const c = require("node:child_process").spawn(process.execPath, ["-e", process.argv[1], ...process.argv.slice(2)], { stdio: "inherit" });
process.stdin.resume();
process.stdin.on("end", () => c.on("exit", () => process.exit(0)));
`;

interface Held {
  initPid: number;
  holderPid: number;
  held: { fd: number; dev: bigint; ino: bigint }[];
  stop(): Promise<void>;
}

async function holdOpen(files: string[]): Promise<Held> {
  const init = spawn(process.execPath, ["-e", INIT, HOLDER, ...files], { stdio: ["pipe", "pipe", "inherit"] });
  const [line] = (await once(readline.createInterface({ input: init.stdout! }), "line")) as [string];
  const out = JSON.parse(line) as { pid: number; held: { fd: number; dev: string; ino: string }[] };
  return {
    initPid: init.pid!,
    holderPid: out.pid,
    held: out.held.map((h) => ({ fd: h.fd, dev: BigInt(h.dev), ino: BigInt(h.ino) })),
    stop: async () => {
      const exited = once(init, "exit");
      init.stdin!.end();
      await exited;
    },
  };
}

const handoff = (pid: number, h: { fd: number; dev: bigint; ino: bigint }): FileHandoff => ({ $typeName: "memoh.bridge.v1.FileHandoff", pid, fd: h.fd, dev: h.dev, ino: h.ino });

test("the host reaches the file a child of the init holds open, by the pid, fd, device and inode it reported", async () => {
  const file = path.join(dir, "data.bin");
  const bytes = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
  fs.writeFileSync(file, bytes);
  const h = await holdOpen([file]);
  try {
    assert.equal(findInNamespace(h.initPid, h.holderPid), h.holderPid);
    // The path is gone: what is read is the open file, not whatever has the name now.
    fs.renameSync(file, `${file}.moved`);
    fs.writeFileSync(file, "another file under the same name");
    const got = reopenHandedOff(h.initPid, handoff(h.holderPid, h.held[0]!));
    assert.ok("fd" in got, "refused" in got ? got.refused : "");
    try {
      assert.deepEqual(fs.readFileSync(got.fd), bytes);
      // Opened for reading only.
      assert.throws(() => fs.writeSync(got.fd, "x"), { code: "EBADF" });
    } finally {
      fs.closeSync(got.fd);
    }
  } finally {
    await h.stop();
  }
});

test("another inode, a FIFO, a device, a procfs file, a process outside the init's children: refused; the FIFO is never opened", async () => {
  const file = path.join(dir, "plain.txt");
  fs.writeFileSync(file, "plain");
  const fifo = path.join(dir, "pipe");
  execFileSync("mkfifo", [fifo]);
  const h = await holdOpen([file, fifo, "/proc/self/status", "/dev/null"]);
  try {
    const [plain, pipe, proc, device] = h.held as [Held["held"][0], Held["held"][0], Held["held"][0], Held["held"][0]];
    const refused = (r: ReturnType<typeof reopenHandedOff>): string => {
      assert.ok("refused" in r, "expected a refusal");
      return r.refused;
    };
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, { ...plain, ino: plain.ino + 1n }))), /another file than the agent named/);
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, { ...plain, dev: plain.dev + 1n }))), /another file than the agent named/);
    // The FIFO has no writer: opening it for reading would wait forever (this test would hang).
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, pipe))), /not a regular file/);
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, device))), /not a regular file/);
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, proc))), /file system of type 0x9fa0/);
    // The holder's fd of the plain file, named as a process that is not the init's child.
    assert.match(refused(reopenHandedOff(h.initPid, handoff(process.pid, plain))), /no process/);
    assert.equal(findInNamespace(h.initPid, process.pid), undefined);
    // A descriptor the holder does not have.
    assert.match(refused(reopenHandedOff(h.initPid, handoff(h.holderPid, { ...plain, fd: 999 }))), /cannot reach descriptor 999/);
  } finally {
    await h.stop();
  }
});

test("the init itself may be the process that holds the file; a gone init finds nothing", async () => {
  const file = path.join(dir, "init-held.txt");
  fs.writeFileSync(file, "held by the init");
  const init = spawn(process.execPath, ["-e", HOLDER, file], { stdio: ["pipe", "pipe", "inherit"] });
  const [line] = (await once(readline.createInterface({ input: init.stdout! }), "line")) as [string];
  const out = JSON.parse(line) as { pid: number; held: { fd: number; dev: string; ino: string }[] };
  const h = { fd: out.held[0]!.fd, dev: BigInt(out.held[0]!.dev), ino: BigInt(out.held[0]!.ino) };
  const got = reopenHandedOff(init.pid!, handoff(init.pid!, h));
  assert.ok("fd" in got);
  assert.equal(fs.readFileSync(got.fd, "utf8"), "held by the init");
  fs.closeSync(got.fd);
  const exited = once(init, "exit");
  init.stdin!.end();
  await exited;
  assert.equal(findInNamespace(init.pid!, init.pid!), undefined);
});

/** Starts `argv` as the init; it prints one JSON line {pid, fd, dev, ino} of the file it holds, and goes when its stdin closes. */
async function initHolding(argv: string[]): Promise<{ initPid: number; held: { pid: number; fd: number; dev: bigint; ino: bigint }; stop(): Promise<void> }> {
  const init = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
  const [line] = (await once(readline.createInterface({ input: init.stdout! }), "line")) as [string];
  const out = JSON.parse(line) as { pid: number; fd: number; dev: string; ino: string };
  return {
    initPid: init.pid!,
    held: { pid: out.pid, fd: out.fd, dev: BigInt(out.dev), ino: BigInt(out.ino) },
    stop: async () => {
      const exited = once(init, "exit");
      init.stdin!.end();
      await exited;
    },
  };
}

test("a file under a lease its holder keeps is refused at once (the open does not wait for the lease to break)", async () => {
  const file = path.join(dir, "leased.bin");
  fs.writeFileSync(file, "leased");
  // A write lease: an open for reading by anyone else waits until the holder gives it up,
  // or lease-break-time (45 s) passes. The holder ignores the kernel's notice.
  const LEASE_HOLDER = [
    "import fcntl, json, os, signal, sys",
    "signal.signal(signal.SIGIO, lambda *a: None)",
    "fd = os.open(sys.argv[1], os.O_RDONLY)",
    "fcntl.fcntl(fd, 1024, fcntl.F_WRLCK)  # F_SETLEASE",
    "st = os.fstat(fd)",
    "print(json.dumps({'pid': os.getpid(), 'fd': fd, 'dev': str(st.st_dev), 'ino': str(st.st_ino)}), flush=True)",
    "sys.stdin.read()",
  ].join("\n");
  const h = await initHolding(["python3", "-c", LEASE_HOLDER, file]);
  try {
    const t0 = Date.now();
    const got = reopenHandedOff(h.initPid, handoff(h.held.pid, h.held));
    assert.ok("refused" in got, "a descriptor of a leased file");
    assert.match(got.refused, /EAGAIN|EWOULDBLOCK|temporarily unavailable/);
    assert.ok(Date.now() - t0 < 10_000, `the open waited ${Date.now() - t0} ms`);
  } finally {
    await h.stop();
  }
});

test("a child of the init in a pid namespace of its own is not taken for the agent, whatever pid it reports", async () => {
  const file = path.join(dir, "nested.txt");
  fs.writeFileSync(file, "nested");
  // unshare is the init; the holder, its child, is pid 1 of a new pid namespace.
  const HOLD_ONE = `
const fs = require("node:fs");
const fd = fs.openSync(process.argv[1], "r");
const st = fs.fstatSync(fd, { bigint: true });
console.log(JSON.stringify({ pid: process.pid, fd, dev: String(st.dev), ino: String(st.ino) }));
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
`;
  const h = await initHolding(["unshare", "--pid", "--fork", process.execPath, "-e", HOLD_ONE, file]);
  try {
    assert.equal(h.held.pid, 1);
    const [child] = fs.readFileSync(`/proc/${h.initPid}/task/${h.initPid}/children`, "utf8").trim().split(/\s+/).map(Number);
    assert.ok(child !== undefined && child > 1);
    // Its namespaces' pids end in 1, one level deeper than the init's.
    assert.match(fs.readFileSync(`/proc/${child}/status`, "utf8"), new RegExp(`^NSpid:\\s+${child}\\s+1$`, "m"));
    assert.equal(findInNamespace(h.initPid, 1), undefined);
    assert.equal(findInNamespace(h.initPid, child), undefined);
    const got = reopenHandedOff(h.initPid, handoff(1, h.held));
    assert.ok("refused" in got);
    assert.match(got.refused, /no process 1/);
  } finally {
    await h.stop();
  }
});
