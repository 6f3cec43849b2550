// Exec stdin against a real agent process: what a process does not read is held
// back by flow control before the agent accepts it (pipes and ptys alike), and
// signal, resize and close_stdin are not stuck behind unread stdin.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { Status, rpcCode } from "../../proto/rpc.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { ExecSession, runExec, waitGone, type ExecStartInit } from "./helpers/exec.js";
import { writeRawAll } from "./helpers/fs.js";

const MiB = 1024 * 1024;

let agent: AgentProcess;
before(async () => {
  agent = await startAgentProcess();
  // Load everything an exec needs (node-pty included) before any RSS is measured.
  await runExec(agent.client, { command: "true", pty: true });
  await runExec(agent.client, { command: "true" });
});
after(async () => {
  await agent.stop();
});

async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kb, "no VmRSS in /proc/<pid>/status");
  return Number(kb[1]) * 1024;
}

/**
 * Writes up to `total` bytes of stdin in `chunk`-sized messages, as fast as the
 * call's flow control lets it, and stops when everything is written or when the
 * call has taken nothing for `stallMs`. Returns the bytes handed to the call.
 */
async function pushStdin(s: ExecSession, total: number, chunk: number, stallMs = 1500): Promise<number> {
  const data = Buffer.alloc(chunk, "x".charCodeAt(0));
  let sent = 0;
  while (sent < total) {
    const ok = s.call.write({ msg: { case: "stdin", value: data } });
    sent += chunk;
    if (ok) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        s.call.off("drain", onDrain);
        resolve(false);
      }, stallMs);
      const onDrain = () => {
        clearTimeout(timer);
        resolve(true);
      };
      s.call.once("drain", onDrain);
    });
    if (!drained) break;
  }
  return sent;
}

async function peakWhile<T>(pid: number, work: Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = await rssBytes(pid);
  let done = false;
  const sampler = (async () => {
    while (!done) {
      peak = Math.max(peak, await rssBytes(pid).catch(() => 0));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    return { result: await work, peak };
  } finally {
    done = true;
    await sampler;
  }
}

async function cancelAndWait(s: ExecSession, pid: number): Promise<void> {
  s.cancel();
  await assert.rejects(s.done, (err) => rpcCode(err) === Status.CANCELLED);
  await waitGone([pid]);
}

test("256 MiB of stdin to a pty exec that does not read: the agent stops taking it, RSS stays flat, also after cancel", async () => {
  const base = await rssBytes(agent.pid);
  const s = new ExecSession(agent.client, { argv: ["sleep", "100"], pty: true });
  const pid = await s.started;
  const { result: sent, peak } = await peakWhile(agent.pid, pushStdin(s, 256 * MiB, MiB));
  console.log(`pty: client handed ${(sent / MiB).toFixed(0)} MiB to the call; agent RSS ${(base / MiB).toFixed(0)} -> peak ${(peak / MiB).toFixed(0)} MiB`);
  // The client's own call buffers 16 messages; the agent must hold back the rest.
  assert.ok(sent < 256 * MiB, `the agent took all ${sent / MiB} MiB of stdin nobody reads`);
  assert.ok(peak - base < 64 * MiB, `agent RSS grew by ${((peak - base) / MiB).toFixed(0)} MiB`);
  await cancelAndWait(s, pid);
  const afterCancel = await rssBytes(agent.pid);
  assert.ok(afterCancel - base < 64 * MiB, `agent RSS after cancel is ${((afterCancel - base) / MiB).toFixed(0)} MiB over its start`);
  // The agent still serves execs on a pty.
  const r = await runExec(agent.client, { command: "echo ok", pty: true });
  assert.equal(r.stdout.toString(), "ok\r\n");
});

test("four pipe execs that do not read stdin: each holds a few MiB at most, not every message the client sends", async () => {
  const base = await rssBytes(agent.pid);
  const sessions = Array.from({ length: 4 }, () => new ExecSession(agent.client, { argv: ["sleep", "100"] }));
  const pids = await Promise.all(sessions.map((s) => s.started));
  const { result: sent, peak } = await peakWhile(agent.pid, Promise.all(sessions.map((s) => pushStdin(s, 128 * MiB, 4 * MiB))));
  console.log(`pipes: client handed ${sent.map((b) => (b / MiB).toFixed(0)).join(", ")} MiB; agent RSS ${(base / MiB).toFixed(0)} -> peak ${(peak / MiB).toFixed(0)} MiB`);
  for (const b of sent) assert.ok(b < 128 * MiB, `a call took all ${b / MiB} MiB of stdin nobody reads`);
  assert.ok(peak - base < 128 * MiB, `agent RSS grew by ${((peak - base) / MiB).toFixed(0)} MiB for four calls`);
  await Promise.all(sessions.map((s, i) => cancelAndWait(s, pids[i]!)));
});

test("stdin in the start message counts too: 6 MiB there, then more, and the call stops reading", async () => {
  const base = await rssBytes(agent.pid);
  const s = new ExecSession(agent.client, { argv: ["sleep", "100"], stdin: Buffer.alloc(6 * MiB, 0x61) });
  const pid = await s.started;
  const { result: sent, peak } = await peakWhile(agent.pid, pushStdin(s, 128 * MiB, 4 * MiB));
  assert.ok(sent < 128 * MiB, `the agent took all ${sent / MiB} MiB of stdin nobody reads`);
  assert.ok(peak - base < 64 * MiB, `agent RSS grew by ${((peak - base) / MiB).toFixed(0)} MiB`);
  await cancelAndWait(s, pid);
});

test("stdin is delivered whole through the buffer: 40 MiB in 1 MiB messages reach a slow reader intact", async () => {
  const s = new ExecSession(agent.client, { command: "sleep 0.3; wc -c" });
  await s.started;
  const sent = await pushStdin(s, 40 * MiB, MiB, 10_000);
  assert.equal(sent, 40 * MiB);
  s.end();
  const r = await s.done;
  assert.equal(r.stdout.toString().trim(), String(40 * MiB));
  assert.equal(r.exit.code, 0);
});

/** Sends 3 MiB of stdin the process never reads, without waiting for flow control. */
function backUpStdin(s: ExecSession): void {
  const chunk = Buffer.alloc(64 * 1024, "y".charCodeAt(0));
  for (let i = 0; i < 48; i++) s.stdin(chunk);
}

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  const value = await work;
  return { value, ms: Date.now() - t0 };
}

for (const pty of [false, true]) {
  const mode = pty ? "pty" : "pipes";
  test(`${mode}: a SIGKILL behind 3 MiB of unread stdin kills at once`, async () => {
    const start: ExecStartInit = { argv: ["sleep", "100"], pty, timeoutMs: 30_000 };
    const s = new ExecSession(agent.client, start);
    const pid = await s.started;
    backUpStdin(s);
    s.signal("SIGKILL");
    const { value: r, ms } = await timed(s.done);
    assert.equal(r.exit.signal, "SIGKILL");
    assert.equal(r.exit.timedOut, false);
    assert.ok(ms < 3000, `the signal took ${ms} ms`);
    await waitGone([pid]);
  });

  test(`${mode}: close_stdin behind 3 MiB of unread stdin takes effect at once (stdin after it is refused)`, async () => {
    const s = new ExecSession(agent.client, { argv: ["sleep", "100"], pty, timeoutMs: 30_000 });
    const pid = await s.started;
    backUpStdin(s);
    s.closeStdin();
    if (pty) {
      // On a pty close_stdin is ^D typed after the stdin before it; a SIGTERM behind it acts at once.
      s.signal("SIGTERM");
      const { value: r, ms } = await timed(s.done);
      assert.equal(r.exit.signal, "SIGTERM");
      assert.ok(ms < 3000, `took ${ms} ms`);
    } else {
      s.stdin("late");
      const { ms } = await timed(
        assert.rejects(s.done, (err) => rpcCode(err) === Status.INVALID_ARGUMENT && /after close_stdin/.test(String((err as Error).message))),
      );
      assert.ok(ms < 3000, `took ${ms} ms`);
    }
    await waitGone([pid]);
  });
}

test("pty: a resize behind 3 MiB of unread stdin reaches the terminal at once", async () => {
  const s = new ExecSession(agent.client, {
    command: `trap 'echo; echo size=$(stty size </dev/tty)' WINCH; echo ready; while :; do sleep 0.05; done`,
    pty: true,
    timeoutMs: 30_000,
  });
  const pid = await s.started;
  await s.waitForStdout(/ready\r\n/);
  backUpStdin(s);
  s.resize(101, 33);
  // Stuck behind stdin the shell never reads, the resize would never arrive. The size
  // line comes after the terminal's echo of the stdin taken so far, which a machine
  // three times slower took over 3 s to drain once in a full run: 10 s is the bound.
  await s.waitForStdout(/size=33 101/, 10_000);
  s.signal("SIGKILL");
  await s.done;
  await waitGone([pid]);
});

test("pty: stdin still queued when the process dies is never written to the closed descriptor (nor to a file that reuses its number)", async () => {
  const payload = Buffer.alloc(64 * 1024, "p".charCodeAt(0));
  for (let round = 0; round < 3; round++) {
    const s = new ExecSession(agent.client, { argv: ["sleep", "100"], pty: true });
    const pid = await s.started;
    backUpStdin(s);
    // Once the terminal echoes input the agent is writing to it; stdin is still
    // queued when the process is killed and the terminal's descriptor closes.
    await s.waitForStdout(/yyyy/);
    s.signal("SIGKILL");
    // Files opened right now may get the closed descriptor's number.
    const writes = Array.from({ length: 8 }, (_, i) => writeRawAll(agent.client, `fd-reuse/${round}-${i}.bin`, payload));
    await s.done;
    await Promise.all(writes);
    await waitGone([pid]);
    for (let i = 0; i < 8; i++) {
      const got = await fs.readFile(`${agent.dataDir}/fd-reuse/${round}-${i}.bin`);
      assert.ok(got.equals(payload), `fd-reuse/${round}-${i}.bin holds ${got.length} bytes, not the ${payload.length} written`);
    }
  }
  assert.doesNotMatch(agent.stderr(), /EBADF|pty write error/);
});
