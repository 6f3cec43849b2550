// The host starts the agent with a low oom_score_adj (so the kernel's OOM
// killer spares it); every process the agent spawns is put back to
// BRIDGE_CHILD_OOM_SCORE_ADJ (default 0) before it is reported started.
//
// Children inherit the agent's value, whatever it is. Lowering a value takes
// CAP_SYS_RESOURCE, which root in a test sandbox may lack, so the tests give
// the agent +500 instead of the workspace's -998: a child at the configured
// value proves the agent wrote it.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { createContext } from "../../agent/context.js";
import { parseOomScoreAdj, setChildOomScore } from "../../agent/exec/oom.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { ExecSession } from "./helpers/exec.js";
import { McpSession } from "./helpers/mcp.js";

const readScore = (pid: number) => fs.readFileSync(`/proc/${pid}/oom_score_adj`, "utf8").trim();

/** The oom_score_adj of an Exec (pipes or pty) and an McpStdio child while each runs. */
async function childScores(agent: AgentProcess): Promise<{ exec: string; pty: string; mcp: string }> {
  const exec = new ExecSession(agent.client, { argv: ["sleep", "30"] });
  const pty = new ExecSession(agent.client, { argv: ["sleep", "30"], pty: true });
  const mcp = new McpSession(agent.client, { command: "sleep", args: ["30"] });
  try {
    const [execPid, ptyPid, mcpPid] = await Promise.all([exec.started, pty.started, mcp.started]);
    return { exec: readScore(execPid), pty: readScore(ptyPid), mcp: readScore(mcpPid) };
  } finally {
    exec.cancel();
    pty.cancel();
    mcp.call.cancel();
  }
}

test("children of an agent at oom_score_adj 500 run at 0; the agent keeps 500", async () => {
  const agent = await startAgentProcess();
  try {
    // What the OCI spec's oomScoreAdj does to tini and the agent in a workspace.
    fs.writeFileSync(`/proc/${agent.pid}/oom_score_adj`, "500");
    assert.deepEqual(await childScores(agent), { exec: "0", pty: "0", mcp: "0" });
    assert.equal(readScore(agent.pid), "500");
    assert.equal(agent.stderr().includes("oom_score_adj"), false, agent.stderr());
  } finally {
    await agent.stop();
  }
});

test("BRIDGE_CHILD_OOM_SCORE_ADJ sets the children's value; an invalid one is logged and means 0", async () => {
  const configured = await startAgentProcess({ env: { BRIDGE_CHILD_OOM_SCORE_ADJ: "300" } });
  try {
    fs.writeFileSync(`/proc/${configured.pid}/oom_score_adj`, "500");
    assert.deepEqual(await childScores(configured), { exec: "300", pty: "300", mcp: "300" });
  } finally {
    await configured.stop();
  }
  const invalid = await startAgentProcess({ env: { BRIDGE_CHILD_OOM_SCORE_ADJ: "lots" } });
  try {
    fs.writeFileSync(`/proc/${invalid.pid}/oom_score_adj`, "500");
    assert.deepEqual(await childScores(invalid), { exec: "0", pty: "0", mcp: "0" });
    assert.match(invalid.stderr(), /BRIDGE_CHILD_OOM_SCORE_ADJ="lots" is not an integer in -1000\.\.1000; using 0/);
  } finally {
    await invalid.stop();
  }
});

test("parseOomScoreAdj accepts integers in -1000..1000 only", () => {
  assert.deepEqual(parseOomScoreAdj(undefined), { value: 0, problem: undefined });
  assert.deepEqual(parseOomScoreAdj("-1000"), { value: -1000, problem: undefined });
  assert.deepEqual(parseOomScoreAdj(" 250 "), { value: 250, problem: undefined });
  for (const bad of ["1001", "-1001", "1.5", "0x10", "abc", "1e3"]) {
    const parsed = parseOomScoreAdj(bad);
    assert.equal(parsed.value, 0, bad);
    assert.match(parsed.problem ?? "", /not an integer in -1000\.\.1000/, bad);
  }
});

test("a failed write is logged once per agent and does not fail the spawn", () => {
  const ctx = createContext("/data");
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    // /proc/<pid> of a pid above pid_max never exists: the write fails like on a host without /proc.
    setChildOomScore(ctx, 2 ** 30);
    setChildOomScore(ctx, 2 ** 30 + 1);
  } finally {
    process.stderr.write = write;
  }
  assert.equal(ctx.oomScoreWarned, true);
  assert.equal(lines.length, 1, lines.join(""));
  assert.match(lines[0]!, /cannot set oom_score_adj 0 of spawned processes \(first failure: pid 1073741824/);
});
