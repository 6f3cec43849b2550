// README.md's quick start, verbatim: `npm run up` in the background, then each command
// in order, from the repository's root. The environment points them at this test's
// private containerd, data root, network and port (the commands themselves are not
// changed); `npm run up` builds and imports the default workspace image as it would on
// a fresh host.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT, startServerEnv, type ServerEnv } from "./env/server.js";

let s: ServerEnv | undefined;

after(async () => {
  await s?.close();
});

function quickStart(): string[] {
  const readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
  const m = /<!-- quick-start -->\s*```sh\n([\s\S]*?)```\s*<!-- \/quick-start -->/.exec(readme);
  assert.ok(m, "README.md has no quick-start block");
  return m[1]!.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
}

function sh(line: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", line], { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (out += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, out }));
  });
}

test("the README's quick start runs verbatim: npm run up serves, the CLI creates, runs, copies and removes", { timeout: 600_000 }, async () => {
  const [up, ...commands] = quickStart();
  assert.equal(up, "npm run up");
  // The default image: what `npm run up` builds from this machine's files.
  s = await startServerEnv({ command: { file: "bash", args: ["-c", up!] }, unset: ["MEMOH_IMAGE"] });
  assert.match(s.output(), /generated the admin token/);
  assert.match(s.output(), /Try:\n\s+\.\/bin\/memoh-workspace\.mjs create my-bot/);
  const outputs: string[] = [];
  for (const line of commands) {
    const r = await sh(line, s.processEnv);
    assert.equal(r.code, 0, `${line}\n${r.out}`);
    outputs.push(r.out);
  }
  const text = outputs.join("\n");
  assert.match(text, /hello from workspace-demo/);
  const readmeLines = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8").split("\n").length - 1;
  assert.match(text, new RegExp(`\\b${readmeLines} /data/README.md`));
  assert.match(text, /deleted the workspace of demo/);
});
