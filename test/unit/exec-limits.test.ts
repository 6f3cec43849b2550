// Limits on what is really sent: an environment too large for execve is
// INVALID_ARGUMENT on pipes, on a pty and for McpStdio; an MCP server's stdout
// line is measured as the text that is sent, not as the bytes it wrote.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Status, rpcCode } from "../../proto/rpc.js";
import { checkExecSize, execArgLimit, MAX_ARG_STRLEN, stackLimit } from "../../agent/exec/arg-max.js";
import { MCP_MAX_LINE_BYTES } from "../../agent/limits.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { runExec } from "./helpers/exec.js";
import { McpSession } from "./helpers/mcp.js";
import { cutUtf8, StderrTail } from "../../agent/mcp/stderr-tail.js";

let agent: AgentProcess;
before(async () => {
  agent = await startAgentProcess();
});
after(async () => {
  await agent.stop();
});

const KiB = 1024;

function bigEnv(count: number, bytes: number): Record<string, string> {
  const env: Record<string, string> = {};
  for (let i = 0; i < count; i++) env[`V${i}`] = "e".repeat(bytes);
  return env;
}

function isInvalid(pattern: RegExp) {
  return (err: unknown) => rpcCode(err) === Status.INVALID_ARGUMENT && pattern.test((err as Error).message);
}

for (const pty of [false, true]) {
  const mode = pty ? "pty" : "pipes";

  test(`${mode}: an environment too large for execve is INVALID_ARGUMENT, one that fits runs`, async () => {
    // 40 variables of 100 KiB: 4 MiB, twice what an 8 MiB stack allows.
    await assert.rejects(runExec(agent.client, { argv: ["true"], env: bigEnv(40, 100 * KiB), pty }), isInvalid(/too large to start a process/));
    // One variable longer than execve takes in one string.
    await assert.rejects(runExec(agent.client, { argv: ["true"], env: { HUGE: "h".repeat(200 * KiB) }, pty }), isInvalid(/environment variable HUGE is/));
    // One argument longer than that.
    await assert.rejects(runExec(agent.client, { argv: ["echo", "a".repeat(200 * KiB)], pty }), isInvalid(/argument 1 is/));
    // 1 MiB in 10 variables fits.
    const ok = await runExec(agent.client, { command: 'printf "%s" "${#V9}"', env: bigEnv(10, 100 * KiB), pty });
    assert.equal(ok.exit.code, 0);
    assert.equal(ok.stdout.toString().trim(), String(100 * KiB));
  });
}

test("McpStdio: an environment too large for execve is INVALID_ARGUMENT", async () => {
  const s = new McpSession(agent.client, { command: "cat", env: bigEnv(40, 100 * KiB) });
  await assert.rejects(s.done, isInvalid(/too large to start a process/));
});

test("execve's limit follows the stack limit the kernel's way", () => {
  assert.equal(stackLimit("Limit Soft Hard Units\nMax stack size            8388608              unlimited            bytes\n"), 8388608);
  assert.equal(stackLimit("Max stack size            unlimited            unlimited            bytes\n"), Infinity);
  assert.equal(execArgLimit(8 * 1024 * KiB), 2 * 1024 * KiB);
  assert.equal(execArgLimit(Infinity), 6 * 1024 * KiB);
  assert.equal(execArgLimit(64 * KiB), 128 * KiB);
  assert.doesNotThrow(() => checkExecSize("/bin/true", [], { A: "x".repeat(MAX_ARG_STRLEN - 4) }));
  assert.throws(() => checkExecSize("/bin/true", [], { A: "x".repeat(MAX_ARG_STRLEN - 2) }), isInvalid(/environment variable A/));
});

test("McpStdio: a stdout line that grows past the message limit when decoded is dropped with a notice; the session goes on", async () => {
  // 6 MiB of 0xff: under the line limit as bytes, 18 MiB as text (each byte becomes U+FFFD).
  const bytes = 6 * 1024 * KiB;
  assert.ok(bytes < MCP_MAX_LINE_BYTES && bytes * 3 > MCP_MAX_LINE_BYTES);
  const script = `head -c ${bytes} /dev/zero | tr '\\000' '\\377'; echo; echo after; exec cat`;
  const s = new McpSession(agent.client, { command: "sh", args: ["-c", script] });
  await s.started;
  const notice = await s.waitFor(() => s.noise.find((n) => n.startsWith("memoh-agent: dropped")), "the drop notice", 20_000);
  assert.match(notice, new RegExp(`dropped a ${bytes}-byte stdout line \\(${bytes * 3} bytes as UTF-8 text; limit ${MCP_MAX_LINE_BYTES} bytes\\)`));
  await s.waitFor(() => s.noise.find((n) => n === "after"), "the next line");
  const reply = await s.request(1, "ping");
  assert.equal(reply.method, "ping");
  s.closeStdin();
  const exit = await s.done;
  assert.equal(exit.code, 0);
});

test("McpStdio stderr tail: a line of invalid UTF-8 is cut as the text that is sent, at a character boundary", () => {
  const tail = new StderrTail(5, 100);
  tail.push(Buffer.concat([Buffer.alloc(90, 0xff), Buffer.from("\n")]));
  tail.push(Buffer.from("short\n"));
  const [first, second] = tail.lines();
  const kept = first!.slice(0, first!.indexOf(" … [line cut"));
  assert.ok(Buffer.byteLength(kept) <= 100, `${Buffer.byteLength(kept)} bytes kept`);
  assert.equal(kept, "\ufffd".repeat(33));
  assert.match(first!, /\[line cut, 90 bytes\]$/);
  assert.equal(second, "short");
  assert.equal(cutUtf8("aé€", 4), "aé");
});
