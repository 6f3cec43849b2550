import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { Status, rpcCode } from "../../proto/rpc.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { ExecSession, runExec, waitGone } from "./helpers/exec.js";

let t: TestAgent;
before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

test("a pty exec runs on /dev/pts with TERM=xterm-256color, output as stdout only", async () => {
  const r = await runExec(t.client, { command: "tty; echo $TERM; echo to-stderr >&2", pty: true });
  assert.match(r.stdout.toString(), /^\/dev\/pts\/\d+\r\nxterm-256color\r\nto-stderr\r\n$/);
  assert.equal(r.stderr.length, 0);
  assert.equal(r.exit.code, 0);
});

test("the pty has the requested size (80x24 by default) and follows resize", async () => {
  const byDefault = await runExec(t.client, { argv: ["stty", "size"], pty: true });
  assert.equal(byDefault.stdout.toString(), "24 80\r\n");

  const s = new ExecSession(t.client, { argv: ["sh"], pty: true, ptySize: { cols: 100, rows: 30 } });
  await s.started;
  s.stdin("stty size\n");
  await s.waitForStdout(/\b30 100\r\n/);
  s.resize(120, 40);
  s.stdin("stty size\n");
  await s.waitForStdout(/\b40 120\r\n/);
  s.resize(0, 50); // 0 keeps the current columns
  s.stdin("stty size\n");
  await s.waitForStdout(/\b50 120\r\n/);
  s.stdin("exit 7\n");
  const r = await s.done;
  assert.equal(r.exit.code, 7);
});

test("stdin is echoed by the terminal, and close_stdin sends end-of-file", async () => {
  const s = new ExecSession(t.client, { argv: ["cat"], pty: true });
  await s.started;
  s.stdin("hello pty\n");
  // Once from the terminal's echo, once from cat.
  await s.waitForStdout(/hello pty\r\nhello pty\r\n/);
  s.closeStdin();
  const r = await s.done;
  assert.equal(r.exit.code, 0);
});

test("a command that closes its terminal before it exits keeps its exit code: the terminal is not hung up under it", async () => {
  // Closing its last descriptor of the terminal used to make the agent close the
  // master at once, which hangs the terminal up: the shell, still running, died of SIGHUP (129).
  const terminalsHeld = async () => {
    const links = await Promise.all((await fs.readdir("/proc/self/fd")).map((fd) => fs.readlink(`/proc/self/fd/${fd}`).catch(() => "")));
    return links.filter((l) => l.startsWith("/dev/pts/") || l === "/dev/ptmx").length;
  };
  const heldBefore = await terminalsHeld();
  const r = await runExec(t.client, { command: "echo before; exec 0<&- 1>&- 2>&-; sleep 0.3; exit 3", pty: true });
  assert.equal(r.stdout.toString(), "before\r\n");
  assert.equal(r.exit.signal, "");
  assert.equal(r.exit.code, 3);
  // The agent (this process) keeps no side of the terminal once the exit is reported.
  assert.equal(await terminalsHeld(), heldBefore);
});

test("a signal, a timeout and a cancel reach the pty's process group", async () => {
  const term = new ExecSession(t.client, { argv: ["sleep", "100"], pty: true });
  await term.started;
  term.signal("SIGTERM");
  const termed = await term.done;
  assert.equal(termed.exit.code, 143);
  assert.equal(termed.exit.signal, "SIGTERM");

  const begin = Date.now();
  const timed = await runExec(t.client, { command: "sleep 100 & echo $!; sleep 100", pty: true, timeoutMs: 500 });
  assert.equal(timed.exit.timedOut, true);
  assert.equal(timed.exit.code, 137);
  assert.ok(Date.now() - begin < 2000);
  await waitGone([timed.pid, Number(timed.stdout.toString().trim())]);

  const cancelled = new ExecSession(t.client, { command: "sleep 100 & echo $!; sleep 100", pty: true });
  const pid = await cancelled.started;
  await cancelled.waitForStdout(/^\d+\r\n/);
  const grandchild = Number(cancelled.stdoutText().trim());
  cancelled.cancel();
  await assert.rejects(cancelled.done, (err) => rpcCode(err) === Status.CANCELLED);
  await waitGone([pid, grandchild]);
});

test("a signal or a cancel sent the moment a pty exec has started reaches its process", async () => {
  // The pty's child starts its own session after fork returns in the agent; a signal
  // to its group before that found nobody and was lost (sleep ran to its end).
  for (let i = 0; i < 20; i++) {
    const s = new ExecSession(t.client, { argv: ["sleep", "5"], pty: true });
    await s.started;
    s.signal("SIGTERM");
    const r = await s.done;
    assert.equal(r.exit.signal, "SIGTERM", `round ${i}`);
    assert.equal(r.exit.code, 143, `round ${i}`);
  }
  for (let i = 0; i < 10; i++) {
    const s = new ExecSession(t.client, { argv: ["sleep", "5"], pty: true });
    const pid = await s.started;
    s.cancel();
    await assert.rejects(s.done, (err) => rpcCode(err) === Status.CANCELLED);
    await waitGone([pid]);
  }
});

test("a pty exec that cannot start fails like a pipe exec", async () => {
  await assert.rejects(runExec(t.client, { argv: ["memoh-no-such-program"], pty: true }), (err) => rpcCode(err) === Status.NOT_FOUND);
  await fs.writeFile(path.join(t.dataDir, "plain.txt"), "not a program\n", { mode: 0o644 });
  await assert.rejects(runExec(t.client, { argv: ["./plain.txt"], pty: true }), (err) => rpcCode(err) === Status.PERMISSION_DENIED);
  await assert.rejects(runExec(t.client, { argv: ["true"], pty: true, cwd: "missing" }), (err) => rpcCode(err) === Status.NOT_FOUND);
  await assert.rejects(
    runExec(t.client, { argv: ["true"], pty: true, ptySize: { cols: 70000, rows: 10 } }),
    (err) => rpcCode(err) === Status.INVALID_ARGUMENT,
  );
  const r = await runExec(t.client, { argv: ["echo", "ok"], pty: true });
  assert.equal(r.stdout.toString(), "ok\r\n");
});
