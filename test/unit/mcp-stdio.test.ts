import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Status, rpcCode } from "../../proto/rpc.js";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { MCP_STDERR_TAIL_LINES } from "../../agent/limits.js";
import { LineSplitter } from "../../agent/mcp/lines.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { processGone, waitGone } from "./helpers/exec.js";
import { McpSession, type JsonObject } from "./helpers/mcp.js";

// A tiny MCP-ish server: answers initialize, tools/list and echo; logs to stdout
// and stderr; exits 3 on a "crash" notification and 0 when stdin closes.
const ECHO_SERVER = `
import readline from "node:readline";
const send = (msg) => process.stdout.write(JSON.stringify(msg) + "\\n");
console.error("echo-server: starting");
console.log("echo-server: this line is not JSON");
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  const msg = JSON.parse(line);
  switch (msg.method) {
    case "initialize":
      send({ jsonrpc: "2.0", id: msg.id, result: { protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "echo", version: "1.0.0" } } });
      break;
    case "tools/list":
      send({ jsonrpc: "2.0", id: msg.id, result: { tools: [{ name: "echo", inputSchema: { type: "object" } }] } });
      break;
    case "echo":
      send({ jsonrpc: "2.0", id: msg.id, result: { line } });
      break;
    case "log":
      console.log(JSON.stringify({ level: 30, msg: "a structured log line" }));
      for (let i = 0; i < msg.params.stderrLines; i++) console.error("stderr line " + i);
      break;
    case "crash":
      console.error("echo-server: crashing as asked");
      process.exit(3);
  }
});
rl.on("close", () => {
  console.error("echo-server: stdin closed, bye");
  process.exit(0);
});
`;

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const everythingEntry = path.join(projectRoot, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js");

let t: TestAgent;
let serverPath: string;
before(async () => {
  t = await startTestAgent();
  serverPath = path.join(t.root, "echo-server.mjs");
  await fs.writeFile(serverPath, ECHO_SERVER);
});
after(async () => {
  await t.close();
});

const initialize = (s: McpSession, id: number) =>
  s.request(id, "initialize", {
    protocolVersion: "2025-06-18",
    capabilities: {},
    clientInfo: { name: "memoh-test", version: "0" },
  });

test("messages go both ways; stdout noise is separated; a crash reports code and stderr tail", async () => {
  const s = new McpSession(t.client, { command: "node", args: [serverPath] });
  const pid = await s.started;
  assert.ok(pid > 0);
  const init = await initialize(s, 1);
  assert.equal((init.result as JsonObject).protocolVersion, "2025-06-18");
  const list = await s.request(2, "tools/list");
  assert.deepEqual(((list.result as JsonObject).tools as JsonObject[]).map((tool) => tool.name), ["echo"]);
  assert.ok(s.noise.includes("echo-server: this line is not JSON"));

  // A JSON line that is not JSON-RPC (a structured log) is noise too.
  s.send({ jsonrpc: "2.0", method: "log", params: { stderrLines: 0 } });
  await s.waitFor(() => s.noise.find((n) => n.includes("structured log")), "structured log noise");

  s.send({ jsonrpc: "2.0", method: "crash" });
  const exit = await s.done;
  assert.equal(exit.code, 3);
  assert.equal(exit.signal, "");
  assert.deepEqual(exit.stderrTail, ["echo-server: starting", "echo-server: crashing as asked"]);
  // Every message from the server arrived as one JSON text.
  for (const m of s.messages) assert.equal((JSON.parse(m) as JsonObject).jsonrpc, "2.0");
});

test("bad client input is answered with a JSON-RPC error and the session goes on", async () => {
  const s = new McpSession(t.client, { command: "node", args: [serverPath] });
  await s.started;

  s.send("{not json");
  const parseError = await s.waitFor(
    () => s.messages.map((m) => JSON.parse(m) as JsonObject).find((m) => (m.error as JsonObject | undefined)?.code === -32700),
    "parse error reply",
  );
  assert.equal(parseError.id, null);
  assert.deepEqual((parseError.error as JsonObject).data, { source: "memoh-agent" });

  s.send({ id: 7, method: "tools/list" }); // no "jsonrpc": "2.0"
  const invalid = await s.response(7);
  assert.equal((invalid.error as JsonObject).code, -32600);

  // Still alive: a valid request is answered by the server.
  const list = await s.request(8, "tools/list");
  assert.ok(list.result);

  // A multi-line message reaches the server as one line, its text unchanged
  // (a number beyond 2^53 is not rounded by re-serialisation).
  s.send('{\n  "jsonrpc": "2.0",\r\n  "id": 9,\n  "method": "echo",\n  "params": {"big": 12345678901234567890}\n}');
  const echoed = await s.response(9);
  const line = (echoed.result as JsonObject).line as string;
  assert.ok(!line.includes("\n"));
  assert.match(line, /"big": 12345678901234567890/);

  s.closeStdin();
  const exit = await s.done;
  assert.equal(exit.code, 0);
  assert.equal(exit.stderrTail[exit.stderrTail.length - 1], "echo-server: stdin closed, bye");
  assert.equal(s.messages.filter((m) => (JSON.parse(m) as JsonObject).id === 8).length, 1);
});

test("the stderr tail keeps the last lines only", async () => {
  const s = new McpSession(t.client, { command: "node", args: [serverPath] });
  await s.started;
  s.send({ jsonrpc: "2.0", method: "log", params: { stderrLines: 200 } });
  s.send({ jsonrpc: "2.0", method: "crash" });
  const exit = await s.done;
  assert.equal(exit.code, 3);
  assert.equal(exit.stderrTail.length, MCP_STDERR_TAIL_LINES);
  assert.equal(exit.stderrTail[exit.stderrTail.length - 1], "echo-server: crashing as asked");
  assert.equal(exit.stderrTail[exit.stderrTail.length - 2], "stderr line 199");
});

test("half-closing the request stream closes the server's stdin", async () => {
  const s = new McpSession(t.client, { command: "node", args: [serverPath] });
  await s.started;
  await initialize(s, 1);
  s.call.end();
  const exit = await s.done;
  assert.equal(exit.code, 0);
});

test("a client cancel kills the server", async () => {
  const s = new McpSession(t.client, { command: "node", args: [serverPath] });
  const pid = await s.started;
  await initialize(s, 1);
  assert.equal(processGone(pid), false);
  s.call.cancel();
  await assert.rejects(s.done, (err) => rpcCode(err) === Status.CANCELLED);
  await waitGone([pid]);
});

test("a server that cannot start is NOT_FOUND; bad starts are INVALID_ARGUMENT", async () => {
  const missing = new McpSession(t.client, { command: "memoh-no-such-mcp-server" });
  await assert.rejects(missing.done, (err: Error) => {
    assert.equal(rpcCode(err), Status.NOT_FOUND);
    assert.match(err.message, /memoh-no-such-mcp-server: command not found/);
    return true;
  });
  const empty = new McpSession(t.client, { command: "" });
  await assert.rejects(empty.done, (err) => rpcCode(err) === Status.INVALID_ARGUMENT);
  const nul = new McpSession(t.client, { command: "node", args: ["a\0b"] });
  await assert.rejects(nul.done, (err) => rpcCode(err) === Status.INVALID_ARGUMENT);

  const call = t.client.bidi(ContainerService.method.mcpStdio);
  const failed = new Promise<unknown>((resolve) => call.on("error", resolve));
  call.on("data", () => {});
  call.write({ msg: { case: "message", value: "{}" } });
  assert.equal(rpcCode(await failed), Status.INVALID_ARGUMENT);
});

test("the real server-everything answers initialize and tools/list", async () => {
  const s = new McpSession(t.client, { command: "node", args: [everythingEntry, "stdio"] });
  await s.started;
  const init = await initialize(s, 1);
  assert.ok((init.result as JsonObject).serverInfo);
  s.send({ jsonrpc: "2.0", method: "notifications/initialized" });
  const list = await s.request(2, "tools/list");
  const names = ((list.result as JsonObject).tools as JsonObject[]).map((tool) => tool.name);
  assert.ok(names.includes("echo"), names.join(", "));
  const echo = await s.request(3, "tools/call", { name: "echo", arguments: { message: "hi from memoh" } });
  assert.match(JSON.stringify(echo.result), /hi from memoh/);
  s.closeStdin();
  await s.done;
});

test("line splitting: partial lines join, CRLF is trimmed, an oversized line is dropped whole", () => {
  const lines: Array<[string, number, boolean]> = [];
  const splitter = new LineSplitter({
    maxBytes: 8,
    keepHead: false,
    onLine: (line, info) => lines.push([line.toString(), info.bytes, info.truncated]),
  });
  splitter.push(Buffer.from("ab"));
  splitter.push(Buffer.from("c\r\nwayyyy too"));
  splitter.push(Buffer.from(" long\nok\nta"));
  splitter.push(Buffer.from("il"));
  splitter.flush();
  assert.deepEqual(lines, [
    ["abc", 4, false],
    ["", 15, true],
    ["ok", 2, false],
    ["tail", 4, false],
  ]);
});
