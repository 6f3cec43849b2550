// FIFOs, sockets and devices through the file RPCs: a clear FAILED_PRECONDITION
// naming the file type, never a hang, and advice that works.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ContainerService, FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status } from "../../proto/rpc.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { runExec } from "./helpers/exec.js";
import { readRawAll, rejectsWith, writeRawAll } from "./helpers/fs.js";

const m = ContainerService.method;
const enc = (s: string) => new TextEncoder().encode(s);
/** No call may wait for a FIFO's other end: a hang fails with DEADLINE_EXCEEDED. */
const quick = { timeoutMs: 5_000 };
let t: TestAgent;
let server: net.Server;

before(async () => {
  t = await startTestAgent();
  execFileSync("mkfifo", [path.join(t.dataDir, "pipe")]);
  await fs.symlink("pipe", path.join(t.dataDir, "pipe-link"));
  server = net.createServer();
  await new Promise<void>((resolve) => server.listen(path.join(t.dataDir, "sock"), resolve));
});
after(async () => {
  await new Promise((resolve) => server.close(resolve));
  await t.close();
});

const cases = [
  { path: "pipe", kind: /is a FIFO \(named pipe\), not a regular file/ },
  { path: "pipe-link", kind: /is a FIFO \(named pipe\), not a regular file/ },
  { path: "sock", kind: /is a Unix socket, not a regular file/ },
  { path: "/dev/null", kind: /is a character device, not a regular file/ },
];

test("ReadFile and ReadRaw refuse FIFOs, sockets and devices at once, naming the type", async () => {
  for (const c of cases) {
    const read = await rejectsWith(t.client.unary(m.readFile, { path: c.path }, quick), Status.FAILED_PRECONDITION, c.kind);
    assert.match(read.message, /ReadFile reads regular files only/);
    assert.doesNotMatch(read.message, /use ReadRaw/, "ReadRaw would refuse it too");
    await rejectsWith(readRawAll(t.client, { path: c.path }, quick), Status.FAILED_PRECONDITION, c.kind);
  }
});

test("WriteFile and WriteRaw onto a FIFO, socket or device are refused and leave it as it was", async () => {
  for (const c of [cases[0]!, cases[2]!, cases[3]!]) {
    const err = await rejectsWith(t.client.unary(m.writeFile, { path: c.path, content: enc("x") }, quick), Status.FAILED_PRECONDITION, /not a regular file/);
    assert.match(err.message, /DeleteFile it first/);
    await rejectsWith(writeRawAll(t.client, c.path, enc("x")), Status.FAILED_PRECONDITION, /not a regular file/);
  }
  assert.ok((await fs.lstat(path.join(t.dataDir, "pipe"))).isFIFO());
  assert.ok((await fs.lstat(path.join(t.dataDir, "sock"))).isSocket());
  assert.ok((await fs.lstat("/dev/null")).isCharacterDevice());
  // The advice: DeleteFile it first, and the write then puts a regular file there.
  execFileSync("mkfifo", [path.join(t.dataDir, "pipe2")]);
  await rejectsWith(t.client.unary(m.writeFile, { path: "pipe2", content: enc("x") }), Status.FAILED_PRECONDITION, /DeleteFile it first/);
  await t.client.unary(m.deleteFile, { path: "pipe2" });
  await t.client.unary(m.writeFile, { path: "pipe2", content: enc("now a file") });
  assert.equal(await fs.readFile(path.join(t.dataDir, "pipe2"), "utf8"), "now a file");
});

test("Stat describes special files; ListDir on one says what it is; under a file, that a parent is not a directory", async () => {
  const st = await t.client.unary(m.stat, { path: "pipe" });
  assert.equal(st.info!.type, FileType.OTHER);
  await rejectsWith(t.client.unary(m.listDir, { path: "pipe" }), Status.FAILED_PRECONDITION, /is a FIFO \(named pipe\), not a directory; use Stat$/);
  await fs.writeFile(path.join(t.dataDir, "plain"), "x");
  await rejectsWith(t.client.unary(m.listDir, { path: "plain" }), Status.FAILED_PRECONDITION, /is a regular file, not a directory; use Stat or ReadFile/);
  await rejectsWith(t.client.unary(m.listDir, { path: "plain/sub" }), Status.FAILED_PRECONDITION, /cannot list .*plain\/sub: a parent is not a directory/);
});

test("the advice works: the pipe and the device can be read from Exec as the messages say", async () => {
  // "read the pipe from Exec instead (e.g. timeout 10 cat FILE …)", with a writer at the other end.
  const fifo = path.join(t.dataDir, "pipe");
  const writer = spawn("sh", ["-c", `printf 'through the pipe' > '${fifo}'`]);
  const written = new Promise((resolve) => writer.once("exit", resolve));
  const piped = await runExec(t.client, { command: `timeout 10 cat '${fifo}'`, timeoutMs: 20_000 });
  assert.deepEqual([piped.exit.code, piped.stdout.toString()], [0, "through the pipe"]);
  assert.equal(await written, 0);
  // "read it from Exec instead (e.g. head -c 65536 FILE)".
  const dev = await runExec(t.client, { command: "head -c 65536 /dev/zero", timeoutMs: 20_000 });
  assert.deepEqual([dev.exit.code, dev.stdout.byteLength], [0, 65536]);
});
