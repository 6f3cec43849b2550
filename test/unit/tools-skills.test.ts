// Skills against a real bridge agent (in this process, on a temp data dir): file lists
// bounded in depth and count with a note, and one unreadable skill folder shown as that
// skill's problem instead of failing list_skills, use_skill and the prompts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";
import { listSkills, listSkillsTool, useSkillTool } from "../../host/tools/skills.js";
import { RpcError, Status } from "../../proto/rpc.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { resultText, toolContext } from "./helpers/tool-context.js";

let agent: TestAgent;
let bridge: BridgeClient;
/** Errors the proxied client throws for a path (the agent's own, played where making them is costly). */
const failures = new Map<string, { recursive?: boolean; error: Error }>();

/**
 * The bridge client as a workspace's: the test agent's data dir is not /data, so
 * "/data/…" is sent relative (resolved against the data dir, as /data is in a workspace).
 */
function workspaceClient(): BridgeClient {
  const rel = (p: string) => (p.startsWith("/data/") ? p.slice("/data/".length) : p);
  const fail = (p: string, recursive: boolean) => {
    const f = failures.get(p);
    if (f !== undefined && (f.recursive === undefined || f.recursive === recursive)) throw f.error;
  };
  return new Proxy(bridge, {
    get(target, prop, receiver) {
      if (prop === "listDir") {
        return async (req: { path: string; recursive?: boolean }, opts?: unknown) => {
          fail(req.path, req.recursive === true);
          return target.listDir({ ...req, path: rel(req.path) }, opts as never);
        };
      }
      if (prop === "readFile") {
        return async (req: { path: string }, opts?: unknown) => {
          fail(req.path, false);
          return target.readFile({ ...req, path: rel(req.path) }, opts as never);
        };
      }
      if (prop === "readRaw") return (p: string, ...rest: unknown[]) => (target.readRaw as (...a: unknown[]) => unknown)(rel(p), ...rest);
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const md = (name: string, description: string) => `---\nname: ${name}\ndescription: ${description}\n---\n# ${name}\n`;

before(async () => {
  agent = await startTestAgent();
  bridge = new BridgeClient(agent.agent.target);
  const skills = path.join(agent.dataDir, ".skills");
  // "big": more files than a list holds, and folders deeper than it descends.
  await fs.mkdir(path.join(skills, "big", "data"), { recursive: true });
  await fs.writeFile(path.join(skills, "big", "SKILL.md"), md("big", "Many files"));
  for (let i = 0; i < 300; i++) await fs.writeFile(path.join(skills, "big", "data", `f${String(i).padStart(3, "0")}.txt`), "");
  await fs.mkdir(path.join(skills, "big", "a", "b", "c", "d"), { recursive: true });
  await fs.writeFile(path.join(skills, "big", "a", "b", "c", "d", "deep.txt"), "");
  // "wide": a folder the agent refuses to walk (over its 100,000-entry cap).
  await fs.mkdir(path.join(skills, "wide", "node_modules"), { recursive: true });
  await fs.writeFile(path.join(skills, "wide", "SKILL.md"), md("wide", "Too many entries"));
  await fs.writeFile(path.join(skills, "wide", "run.sh"), "");
  failures.set("/data/.skills/wide", { recursive: true, error: new RpcError(Status.RESOURCE_EXHAUSTED, "listing /data/.skills/wide visits more than 100000 entries; lower max_depth, list a subdirectory, or list without recursive") });
  // "locked": a folder the agent may not read.
  await fs.mkdir(path.join(skills, "locked"), { recursive: true });
  failures.set("/data/.skills/locked", { error: new RpcError(Status.PERMISSION_DENIED, "/data/.skills/locked: permission denied") });
  // "small": an ordinary skill.
  await fs.mkdir(path.join(skills, "small", "scripts"), { recursive: true });
  await fs.writeFile(path.join(skills, "small", "SKILL.md"), md("small", "Few files"));
  await fs.writeFile(path.join(skills, "small", "scripts", "run.sh"), "");
});

after(async () => {
  bridge?.close();
  await agent?.close();
});

test("a skill's file list is cut at 200 files and 4 folder levels, and says so", async () => {
  const skills = await listSkills(workspaceClient());
  const big = skills.find((s) => s.folder === "big")!;
  assert.equal(big.problem, null);
  assert.equal(big.files.length, 200);
  assert.ok(!big.files.includes("a/b/c/d/deep.txt"));
  assert.match(big.filesNote ?? "", /only the first 200 files are listed \(the folder holds \d+ entries\); folders more than 4 levels down are not listed/);
  const small = skills.find((s) => s.folder === "small")!;
  assert.deepEqual({ files: small.files, filesNote: small.filesNote, problem: small.problem }, { files: ["SKILL.md", "scripts/run.sh"], filesNote: null, problem: null });

  const text = resultText(await useSkillTool.run({ name: "big" }, toolContext(workspaceClient())));
  assert.equal(text.split("\n").filter((l) => l.startsWith("- /data/.skills/big/")).length, 200);
  assert.match(text, /\[only the first 200 files are listed .*; see the rest with list or glob on \/data\/\.skills\/big\]\n$/);
});

test("a skill folder too large to walk and one that cannot be read do not fail the other skills", async () => {
  const skills = await listSkills(workspaceClient());
  assert.deepEqual(skills.map((s) => s.folder).sort(), ["big", "locked", "small", "wide"]);
  const wide = skills.find((s) => s.folder === "wide")!;
  assert.equal(wide.problem, null, "still usable: its SKILL.md is readable");
  assert.deepEqual(wide.files.sort(), ["SKILL.md", "run.sh"]);
  assert.match(wide.filesNote ?? "", /too many entries to list; only the files directly in it are shown/);
  const locked = skills.find((s) => s.folder === "locked")!;
  assert.match(locked.problem ?? "", /cannot be read \(\/data\/\.skills\/locked: permission denied\)/);

  const listed = resultText(await listSkillsTool.run({}, toolContext(workspaceClient())));
  assert.match(listed, /^4 skills:\n/);
  assert.match(listed, /- locked \(unusable: it cannot be read/);
  assert.match(listed, /- small: Few files/);
  assert.match(resultText(await useSkillTool.run({ name: "wide" }, toolContext(workspaceClient()))), /- \/data\/\.skills\/wide\/run\.sh\n\[the folder holds too many entries/);
  assert.match(resultText(await useSkillTool.run({ name: "small" }, toolContext(workspaceClient()))), /- \/data\/\.skills\/small\/scripts\/run\.sh\n$/);
});

test("a workspace failure (agent gone) still fails the listing instead of becoming a skill's problem", async () => {
  failures.set("/data/.skills/small", { error: new RpcError(Status.UNAVAILABLE, "agent gone") });
  try {
    await assert.rejects(listSkills(workspaceClient()), /agent gone/);
  } finally {
    failures.delete("/data/.skills/small");
  }
});
