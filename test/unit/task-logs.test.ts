// Task-log rotation (copytruncate) against a real writer process that holds the
// log open with O_APPEND, as containerd's shim does.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { rotateTaskLog, rotateTaskLogs, TaskLogError } from "../../host/workspace/task-logs.js";

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-task-logs-"));
});
after(() => fs.rm(dir, { recursive: true, force: true }));

// The writer opens the file with "a" (O_WRONLY|O_CREAT|O_APPEND) once and keeps it open.
// Commands on stdin, one per line: "write <n> <tag>" appends n lines "<tag> <i>\n" and answers
// "ok"; "flood" writes numbered lines "line <i>\n" nonstop, one write() each, until "stop",
// then answers "stopped <count>".
const WRITER = `
const fs = require("node:fs");
const readline = require("node:readline");
const fd = fs.openSync(process.argv[1], "a");
let flooding = false;
let count = 0;
function flood() {
  if (!flooding) { process.stdout.write("stopped " + count + "\\n"); return; }
  for (let k = 0; k < 50; k++) fs.writeSync(fd, "line " + String(count++).padStart(8, "0") + "\\n");
  setImmediate(flood);
}
readline.createInterface({ input: process.stdin }).on("line", (cmd) => {
  const [op, n, tag] = cmd.split(" ");
  if (op === "write") {
    for (let i = 0; i < Number(n); i++) fs.writeSync(fd, tag + " " + i + "\\n");
    process.stdout.write("ok\\n");
  } else if (op === "flood") { flooding = true; setImmediate(flood); process.stdout.write("flooding\\n"); }
  else if (op === "stop") flooding = false;
});
`;

class Writer {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly answers: string[] = [];
  private waiting: ((line: string) => void) | undefined;
  private stderr = "";

  constructor(file: string) {
    this.child = spawn(process.execPath, ["-e", WRITER, file], { stdio: ["pipe", "pipe", "pipe"] });
    this.child.stderr.on("data", (d: Buffer) => (this.stderr += d.toString()));
    readline.createInterface({ input: this.child.stdout }).on("line", (line) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      } else this.answers.push(line);
    });
  }

  /** Sends a command and waits for the writer's answer (a deadline instead of hanging the suite). */
  async send(cmd: string): Promise<string> {
    this.child.stdin.write(`${cmd}\n`);
    const queued = this.answers.shift();
    if (queued !== undefined) return queued;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`writer did not answer "${cmd}" in 10 s; stderr: ${this.stderr}`)), 10_000);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.stdin.end();
    this.child.kill();
    await exited;
  }
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const size = async (file: string): Promise<number> => (await fs.stat(file)).size;

describe("rotateTaskLog", () => {
  test("a log held open with O_APPEND: the copy holds the old output, the writer's next lines start the fresh file", async () => {
    const log = path.join(dir, "append.log");
    const writer = new Writer(log);
    try {
      assert.equal(await writer.send("write 400 before"), "ok");
      const old = await fs.readFile(log, "utf8");
      assert.ok(old.length > 4096);
      assert.equal(await rotateTaskLog(log, { maxBytes: 4096, keep: 2 }), "rotated");
      assert.equal(await size(log), 0);
      assert.equal(await fs.readFile(`${log}.1`, "utf8"), old);

      assert.equal(await writer.send("write 2 after"), "ok");
      const fresh = await fs.readFile(log);
      // Without O_APPEND the writer would continue at its old offset and leave that many NULs.
      assert.equal(fresh.length, "after 0\nafter 1\n".length, "the fresh file holds only the new lines");
      assert.equal(fresh.toString("utf8"), "after 0\nafter 1\n");
      assert.notEqual(fresh[0], 0);
    } finally {
      await writer.close();
    }
  });

  test("rotating while the writer floods: no NULs, no torn lines, order kept across .2, .1 and the log", async () => {
    const log = path.join(dir, "flood.log");
    const writer = new Writer(log);
    const maxBytes = 64 * 1024;
    try {
      assert.equal(await writer.send("flood"), "flooding");
      for (let round = 0; round < 3; round++) {
        await waitFor(`the log to pass ${maxBytes} bytes`, async () => (await size(log)) > maxBytes);
        assert.equal(await rotateTaskLog(log, { maxBytes, keep: 2 }), "rotated");
      }
      // The writer goes on after the last rotation: its lines land at the start of the file.
      await waitFor("new output after the last rotation", async () => (await size(log)) > 1000);
      assert.match(await writer.send("stop"), /^stopped \d+$/);
    } finally {
      await writer.close();
    }

    const numbers: number[] = [];
    for (const file of [`${log}.2`, `${log}.1`, log]) {
      const bytes = await fs.readFile(file);
      assert.ok(bytes.length > 0, `${file} is empty`);
      assert.equal(bytes.indexOf(0), -1, `${file} holds a NUL byte (a hole: the writer did not follow the truncation)`);
      const text = bytes.toString("utf8");
      assert.match(text, /^(line \d{8}\n)+$/, `${file} holds a torn or foreign line`);
      const inFile = [...text.matchAll(/line (\d{8})\n/g)].map((m) => Number(m[1]));
      if (numbers.length > 0) assert.ok(inFile[0]! > numbers[numbers.length - 1]!, `${file} starts before the previous copy ended`);
      numbers.push(...inFile);
    }
    for (let i = 1; i < numbers.length; i++) assert.ok(numbers[i]! > numbers[i - 1]!, `line ${numbers[i]} after ${numbers[i - 1]}`);
    assert.ok(await size(`${log}.1`) > maxBytes);
    await assert.rejects(fs.access(`${log}.3`), "keep = 2: the oldest copy is dropped");
  });

  test("copies shift up to keep, the oldest is dropped; copies beyond a smaller keep are removed", async () => {
    const log = path.join(dir, "shift.log");
    for (const content of ["first-".repeat(20), "second-".repeat(20), "third-".repeat(20)]) {
      await fs.writeFile(log, content, { flag: "a" });
      assert.equal(await rotateTaskLog(log, { maxBytes: 10, keep: 2 }), "rotated");
    }
    assert.equal(await fs.readFile(`${log}.1`, "utf8"), "third-".repeat(20));
    assert.equal(await fs.readFile(`${log}.2`, "utf8"), "second-".repeat(20));
    await assert.rejects(fs.access(`${log}.3`));
    assert.equal(await size(log), 0);

    await fs.writeFile(log, "fourth-".repeat(20));
    assert.equal(await rotateTaskLog(log, { maxBytes: 10, keep: 1 }), "rotated");
    assert.equal(await fs.readFile(`${log}.1`, "utf8"), "fourth-".repeat(20));
    await assert.rejects(fs.access(`${log}.2`), "a copy beyond keep = 1 is removed");
  });

  test("keep = 0 only truncates; a log at or under maxBytes, or missing, is unchanged", async () => {
    const log = path.join(dir, "zero.log");
    await fs.writeFile(log, "x".repeat(100));
    assert.equal(await rotateTaskLog(log, { maxBytes: 100, keep: 0 }), "unchanged");
    assert.equal(await size(log), 100);
    await fs.writeFile(log, "y", { flag: "a" });
    assert.equal(await rotateTaskLog(log, { maxBytes: 100, keep: 0 }), "rotated");
    assert.equal(await size(log), 0);
    assert.deepEqual((await fs.readdir(dir)).filter((n) => n.startsWith("zero.log")), ["zero.log"]);
    assert.equal(await rotateTaskLog(path.join(dir, "missing.log"), { maxBytes: 1, keep: 2 }), "unchanged");
  });

  test("symlinks, directories and FIFOs are refused; what a symlink points to is untouched", async () => {
    const target = path.join(dir, "precious.txt");
    await fs.writeFile(target, "keep me ".repeat(100));
    const link = path.join(dir, "link.log");
    await fs.symlink(target, link);
    await assert.rejects(rotateTaskLog(link, { maxBytes: 10, keep: 2 }), (err) => {
      assert.ok(err instanceof TaskLogError);
      assert.match(err.message, /link\.log: not a regular file \(a symlink\): refusing to rotate it/);
      return true;
    });
    assert.equal(await fs.readFile(target, "utf8"), "keep me ".repeat(100));
    await assert.rejects(fs.access(`${link}.1`));

    const sub = path.join(dir, "dir.log");
    await fs.mkdir(sub);
    await assert.rejects(rotateTaskLog(sub, { maxBytes: 1, keep: 1 }), /dir\.log: not a regular file \(a directory\)/);
    const fifo = path.join(dir, "fifo.log");
    execFileSync("mkfifo", [fifo]);
    await assert.rejects(rotateTaskLog(fifo, { maxBytes: 1, keep: 1 }), /fifo\.log: not a regular file \(a FIFO\)/);
    await fs.rm(sub, { recursive: true });
    await fs.rm(fifo);
    await fs.rm(link);
  });

  test("a symlink where the copy would go is replaced, not written through", async () => {
    const target = path.join(dir, "victim.txt");
    await fs.writeFile(target, "untouched");
    const log = path.join(dir, "trap.log");
    await fs.writeFile(log, "z".repeat(50));
    await fs.symlink(target, `${log}.1`);
    assert.equal(await rotateTaskLog(log, { maxBytes: 10, keep: 1 }), "rotated");
    assert.equal(await fs.readFile(target, "utf8"), "untouched");
    assert.ok((await fs.lstat(`${log}.1`)).isFile());
    assert.equal(await fs.readFile(`${log}.1`, "utf8"), "z".repeat(50));
  });

  test("bad options are refused before anything is touched", async () => {
    const log = path.join(dir, "opts.log");
    await fs.writeFile(log, "q".repeat(50));
    for (const opts of [
      { maxBytes: 0, keep: 1 },
      { maxBytes: 1.5, keep: 1 },
      { maxBytes: 10, keep: -1 },
      { maxBytes: 10, keep: 21 },
      { maxBytes: 10, keep: 0.5 },
    ]) {
      await assert.rejects(rotateTaskLog(log, opts), /task log rotation: (maxBytes|keep) must be/);
    }
    assert.equal(await size(log), 50);
  });
});

describe("rotateTaskLogs", () => {
  test("rotates every oversized *.log of the dir, not the copies; reports what it refused and does the rest", async () => {
    const logs = path.join(dir, "logs");
    await fs.mkdir(logs);
    await fs.writeFile(path.join(logs, "workspace-a.log"), "a".repeat(200));
    await fs.writeFile(path.join(logs, "workspace-b.log"), "b".repeat(20));
    await fs.writeFile(path.join(logs, "workspace-c.log.1"), "c".repeat(200));
    await fs.writeFile(path.join(logs, "notes.txt"), "n".repeat(200));
    await fs.writeFile(path.join(logs, "elsewhere.txt"), "e".repeat(200));
    await fs.symlink(path.join(logs, "elsewhere.txt"), path.join(logs, "workspace-l.log"));
    await fs.writeFile(path.join(logs, "workspace-z.log"), "z".repeat(200));

    const result = await rotateTaskLogs(logs, { maxBytes: 100, keep: 1 });
    assert.deepEqual(result.rotated, [path.join(logs, "workspace-a.log"), path.join(logs, "workspace-z.log")]);
    assert.deepEqual(
      result.failed.map((f) => [f.file, f.error instanceof TaskLogError]),
      [[path.join(logs, "workspace-l.log"), true]],
    );
    assert.deepEqual((await fs.readdir(logs)).sort(), [
      "elsewhere.txt",
      "notes.txt",
      "workspace-a.log",
      "workspace-a.log.1",
      "workspace-b.log",
      "workspace-c.log.1",
      "workspace-l.log",
      "workspace-z.log",
      "workspace-z.log.1",
    ]);
    assert.equal(await size(path.join(logs, "workspace-c.log.1")), 200);
    assert.equal(await size(path.join(logs, "elsewhere.txt")), 200);
    assert.equal(await size(path.join(logs, "workspace-b.log")), 20);
    assert.deepEqual(await rotateTaskLogs(path.join(dir, "no-such-dir"), { maxBytes: 1, keep: 1 }), { rotated: [], failed: [] });
  });
});
