// The environment contract between host and agent, against real agent
// processes: the agent's own environment is the host's (PATH, HOME, BRIDGE_*);
// the image's ENV arrives as BRIDGE_IMAGE_ENV and is the base of everything
// the agent spawns (Exec, Exec on a pty, McpStdio); nothing of the agent's own
// reaches a child.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { DEFAULT_PATH, parseImageEnv } from "../../agent/exec/env.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";
import { runExec } from "./helpers/exec.js";
import { McpSession } from "./helpers/mcp.js";

const TOOLKIT = "/opt/memoh/toolkit/bin";
const IMAGE_PATH = "/image/bin:/usr/local/bin:/usr/bin:/bin";
const IMAGE_ENV = [
  `PATH=${IMAGE_PATH}`,
  "NODE_OPTIONS=--require /nonexistent",
  "LD_PRELOAD=/nonexistent.so",
  "IMAGE_VAR=from the image = with equals",
  "HOME=/home/image",
];

function envLines(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const line of text.replace(/\r/g, "").split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) env.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return env;
}

function bridgeVars(env: Map<string, string>): string[] {
  return [...env.keys()].filter((name) => name.startsWith("BRIDGE_"));
}

let imageAgent: AgentProcess;
before(async () => {
  imageAgent = await startAgentProcess({
    env: {
      BRIDGE_IMAGE_ENV: JSON.stringify(IMAGE_ENV),
      BRIDGE_WORKSPACE_ID: "workspace-env-test",
      // The agent's own NODE_OPTIONS (harmless to it) must not reach children either.
      NODE_OPTIONS: "--max-old-space-size=256",
      MEMOH_AGENT_ONLY: "agent",
    },
  });
});
after(async () => {
  await imageAgent.stop();
});

test("with BRIDGE_IMAGE_ENV the agent serves although the image sets NODE_OPTIONS and LD_PRELOAD; Info names the workspace", async () => {
  const info = await imageAgent.client.unary(ContainerService.method.info, {});
  assert.equal(info.pid, imageAgent.pid);
  assert.equal(info.workspaceId, "workspace-env-test");
  assert.equal(imageAgent.stderr().includes("BRIDGE_IMAGE_ENV"), false, imageAgent.stderr());
});

test("Exec env: the image's variables, its PATH first with the toolkit appended, nothing of the agent's", async () => {
  const r = await runExec(imageAgent.client, { argv: ["env"] });
  assert.equal(r.exit.code, 0, r.stderr.toString());
  const env = envLines(r.stdout.toString());
  assert.equal(env.get("PATH"), `${IMAGE_PATH}:${TOOLKIT}`);
  assert.equal(env.get("NODE_OPTIONS"), "--require /nonexistent");
  assert.equal(env.get("LD_PRELOAD"), "/nonexistent.so");
  assert.equal(env.get("IMAGE_VAR"), "from the image = with equals");
  assert.equal(env.get("HOME"), "/home/image", "an image's HOME is kept");
  assert.equal(env.get("USER"), "root");
  assert.equal(env.get("LOGNAME"), "root");
  assert.deepEqual(bridgeVars(env), []);
  assert.equal(env.has("MEMOH_AGENT_ONLY"), false, "the agent's own environment leaked");
  // Exactly the image's variables plus the user's.
  assert.deepEqual([...env.keys()].sort(), ["HOME", "IMAGE_VAR", "LD_PRELOAD", "LOGNAME", "NODE_OPTIONS", "PATH", "USER"]);

  // clean_env, unset_env and env apply on top of the image's base.
  const edited = envLines((await runExec(imageAgent.client, { argv: ["env"], unsetEnv: ["LD_PRELOAD"], env: { NODE_OPTIONS: "" } })).stdout.toString());
  assert.equal(edited.has("LD_PRELOAD"), false);
  assert.equal(edited.get("NODE_OPTIONS"), "");
  assert.equal(edited.get("IMAGE_VAR"), "from the image = with equals");
  const clean = envLines((await runExec(imageAgent.client, { argv: ["/usr/bin/env"], cleanEnv: true })).stdout.toString());
  assert.deepEqual([...clean.entries()], [["PATH", `${DEFAULT_PATH}:${TOOLKIT}`]]);
});

test("Exec on a pty and McpStdio get the same base environment", async () => {
  const pty = await runExec(imageAgent.client, { argv: ["env"], pty: true });
  const ptyEnv = envLines(pty.stdout.toString());
  assert.equal(ptyEnv.get("PATH"), `${IMAGE_PATH}:${TOOLKIT}`);
  assert.equal(ptyEnv.get("NODE_OPTIONS"), "--require /nonexistent");
  assert.equal(ptyEnv.get("TERM"), "xterm-256color");
  assert.deepEqual(bridgeVars(ptyEnv), []);
  assert.equal(ptyEnv.has("MEMOH_AGENT_ONLY"), false);

  // A server that prints its environment: every line arrives as stdout noise.
  const mcp = new McpSession(imageAgent.client, { command: "env" });
  await mcp.done;
  const mcpEnv = envLines(mcp.noise.join("\n"));
  assert.equal(mcpEnv.get("PATH"), `${IMAGE_PATH}:${TOOLKIT}`);
  assert.equal(mcpEnv.get("LD_PRELOAD"), "/nonexistent.so");
  assert.equal(mcpEnv.get("IMAGE_VAR"), "from the image = with equals");
  assert.deepEqual(bridgeVars(mcpEnv), []);
  assert.equal(mcpEnv.has("MEMOH_AGENT_ONLY"), false);
});

test("an invalid BRIDGE_IMAGE_ENV is logged once and counts as empty; the agent still serves", async () => {
  for (const [raw, why] of [
    ["not json", /BRIDGE_IMAGE_ENV is not valid JSON/],
    ['["A=1", 5]', /BRIDGE_IMAGE_ENV entry 1 is not a string/],
    ['{"PATH":"/x"}', /BRIDGE_IMAGE_ENV is not a JSON array/],
  ] as const) {
    const agent = await startAgentProcess({ env: { BRIDGE_IMAGE_ENV: raw, MEMOH_AGENT_ONLY: "agent" } });
    try {
      const env = envLines((await runExec(agent.client, { argv: ["env"] })).stdout.toString());
      assert.equal(env.get("PATH"), `${DEFAULT_PATH}:${TOOLKIT}`);
      assert.equal(env.has("A"), false);
      assert.equal(env.has("MEMOH_AGENT_ONLY"), false, "an invalid image env fell back to the agent's own");
      assert.deepEqual(bridgeVars(env), []);
      assert.match(agent.stderr(), why);
      assert.equal(agent.stderr().split("\n").filter((l) => l.includes("BRIDGE_IMAGE_ENV")).length, 1);
    } finally {
      await agent.stop();
    }
  }
});

test("without BRIDGE_IMAGE_ENV (an older host) children inherit the agent's environment minus its BRIDGE_* settings", async () => {
  const agent = await startAgentProcess({ env: { MEMOH_FROM_OLD_HOST: "kept", BRIDGE_CHILD_OOM_SCORE_ADJ: "0" } });
  try {
    const env = envLines((await runExec(agent.client, { argv: ["env"] })).stdout.toString());
    assert.equal(env.get("MEMOH_FROM_OLD_HOST"), "kept");
    assert.equal(env.get("PATH"), `${DEFAULT_PATH}:${TOOLKIT}`);
    assert.equal(env.get("HOME"), "/root");
    assert.deepEqual(bridgeVars(env), []);
    // No BRIDGE_WORKSPACE_ID: the hostname (a container's id) names the workspace.
    assert.equal((await agent.client.unary(ContainerService.method.info, {})).workspaceId, os.hostname());
  } finally {
    await agent.stop();
  }
});

test("parseImageEnv: NAME=value entries, later duplicates win, malformed strings skipped with a note", () => {
  assert.deepEqual(parseImageEnv('["A=1","B==2","A=3","C="]'), { vars: { A: "3", B: "=2", C: "" }, problem: undefined });
  const skipped = parseImageEnv('["NOEQUALS","=empty-name","OK=1"]');
  assert.deepEqual(skipped.vars, { OK: "1" });
  assert.match(skipped.problem ?? "", /entries 0, 1 are not NAME=value/);
  assert.deepEqual(parseImageEnv("[]"), { vars: {}, problem: undefined });
  assert.deepEqual(parseImageEnv("null").vars, {});
});
