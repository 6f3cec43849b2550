// The apply_patch tool against a real bridge agent (in this process, on a temp socket
// and data dir): what reaches the files beyond their text.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";
import { applyPatchTool } from "../../host/tools/apply-patch.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { resultText, toolContext } from "./helpers/tool-context.js";

let agent: TestAgent;
let bridge: BridgeClient;

before(async () => {
  agent = await startTestAgent();
  bridge = new BridgeClient(agent.agent.target);
});

after(async () => {
  bridge?.close();
  await agent?.close();
});

test("a file moved by a patch keeps its permission bits (an executable stays executable)", async () => {
  const src = path.join(agent.dataDir, "bin", "run.sh");
  await fs.mkdir(path.dirname(src), { recursive: true });
  await fs.writeFile(src, "#!/bin/sh\necho old\n");
  await fs.chmod(src, 0o750);
  const patch = ["*** Begin Patch", "*** Update File: bin/run.sh", "*** Move to: tools/run.sh", " #!/bin/sh", "-echo old", "+echo new", "*** End Patch"].join("\n");
  const r = await applyPatchTool.run({ patch }, toolContext(bridge));
  assert.equal(resultText(r), "Applied the patch:\nR bin/run.sh -> tools/run.sh");
  const moved = path.join(agent.dataDir, "tools", "run.sh");
  assert.equal(await fs.readFile(moved, "utf8"), "#!/bin/sh\necho new\n");
  assert.equal((await fs.stat(moved)).mode & 0o7777, 0o750);
  await assert.rejects(fs.stat(src), { code: "ENOENT" });
  // A move without hunks too.
  await applyPatchTool.run({ patch: "*** Begin Patch\n*** Update File: tools/run.sh\n*** Move to: run.sh\n*** End Patch" }, toolContext(bridge));
  assert.equal((await fs.stat(path.join(agent.dataDir, "run.sh"))).mode & 0o7777, 0o750);
});
