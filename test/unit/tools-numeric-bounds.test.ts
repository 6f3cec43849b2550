// Numeric tool arguments stay within what reaches the agent: offsets travel in protobuf
// uint32 fields, so a larger value must be refused as bad input (or answered), never
// fail to encode as an internal error.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";
import { listTool } from "../../host/tools/list.js";
import { readTool } from "../../host/tools/read.js";
import { BASE_TOOLS } from "../../host/tools/server.js";
import { ToolError, UINT32_MAX } from "../../host/tools/tool.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { toolContext } from "./helpers/tool-context.js";

let agent: TestAgent;
let bridge: BridgeClient;

before(async () => {
  agent = await startTestAgent();
  bridge = new BridgeClient(agent.agent.target);
  await fs.mkdir(path.join(agent.dataDir, "d"), { recursive: true });
  await fs.writeFile(path.join(agent.dataDir, "d", "f.txt"), "one\ntwo\n");
});

after(async () => {
  bridge?.close();
  await agent?.close();
});

test("every numeric argument of every tool has a maximum that fits a uint32", () => {
  for (const def of BASE_TOOLS) {
    const js = def.inputSchema["~standard"].jsonSchema.input({ target: "draft-2020-12" }) as { properties?: Record<string, { type?: string; maximum?: number }> };
    for (const [name, prop] of Object.entries(js.properties ?? {})) {
      if (prop.type !== "integer" && prop.type !== "number") continue;
      assert.ok(prop.maximum !== undefined && prop.maximum <= UINT32_MAX, `${def.name}.${name}: maximum ${prop.maximum}`);
    }
  }
});

test("read's line_offset and list's offset past 2^32-1 are bad input; up to it they are answered as past the end", async () => {
  assert.equal(readTool.inputSchema.safeParse({ path: "d/f.txt", line_offset: 2 ** 32 }).success, false);
  assert.equal(listTool.inputSchema.safeParse({ path: "d", offset: 2 ** 32 }).success, false);
  const read = readTool.inputSchema.parse({ path: "d/f.txt", line_offset: UINT32_MAX });
  await assert.rejects(readTool.run(read, toolContext(bridge)), (err: unknown) => err instanceof ToolError && /line_offset 4294967295 is past the end of d\/f\.txt, which has 2 lines/.test(err.message));
  for (const recursive of [false, true]) {
    const list = listTool.inputSchema.parse({ path: "d", offset: UINT32_MAX, recursive });
    await assert.rejects(listTool.run(list, toolContext(bridge)), (err: unknown) => err instanceof ToolError && /offset 4294967295 is past the end/.test(err.message));
  }
});
