// The MCP stdio proxy (host/tools/stdio/) between real processes: a bridge agent on a
// temp socket runs the servers (server-everything, and a scripted server whose
// behaviour the tests choose), the proxy relays them over real HTTP on 127.0.0.1, and
// the official SDK client (2025 line) talks to it.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import fs from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, LoggingMessageNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { BridgeClient } from "../../host/bridge/client.js";
import { openStdioChannel } from "../../host/tools/stdio/channel.js";
import { McpServerStartError } from "../../host/tools/stdio/errors.js";
import { McpStdioProxy } from "../../host/tools/stdio/proxy.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { processGone, waitGone } from "./helpers/exec.js";

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const everything = path.join(projectRoot, "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js");

// A server whose every move the tests choose. It answers initialize (counting them),
// tools/list, and tools/call of: echo (returns the id it saw and its arguments), slow
// (never answers), crash (writes to stderr, exits 7), seen (what it saw: ids of slow
// calls, cancelled ids, initializes), ask (sends the client a ping request and answers
// with what came back), flood (64 log notifications of 1 MiB, then the answer). With `STALL` in argv initialize is never answered; with
// `ASK_ON_INIT` it pings the client after each notifications/initialized.
const SCRIPTED_SERVER = `
import readline from "node:readline";
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: "2.0", ...m }) + "\\n");
const text = (id, value) => send({ id, result: { content: [{ type: "text", text: JSON.stringify(value) }] } });
const stall = process.argv.includes("STALL");
const seen = { slow: [], cancelled: [], initialize: 0, echo: [], initAsk: [] };
const waiting = new Map();
let ownId = 1000;
console.error("scripted: up");
readline.createInterface({ input: process.stdin, crlfDelay: Infinity }).on("line", (line) => {
  const m = JSON.parse(line);
  if (m.method === "initialize") {
    seen.initialize++;
    if (!stall) send({ id: m.id, result: { protocolVersion: m.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "scripted", version: "1.0.0" } } });
  } else if (m.method === "tools/list") {
    send({ id: m.id, result: { tools: ["echo", "slow", "crash", "seen", "ask", "flood"].map((name) => ({ name, inputSchema: { type: "object" } })) } });
  } else if (m.method === "tools/call") {
    const name = m.params.name;
    if (name === "echo") { seen.echo.push(m.id); text(m.id, { id: m.id, args: m.params.arguments ?? {} }); }
    else if (name === "slow") seen.slow.push(m.id);
    else if (name === "crash") { console.error("scripted: crashing on request"); process.exit(7); }
    else if (name === "seen") text(m.id, seen);
    else if (name === "ask") { const id = ownId++; waiting.set(id, m.id); send({ id, method: "ping" }); }
    else if (name === "flood") {
      for (let i = 0; i < 64; i++) send({ method: "notifications/message", params: { level: "info", data: String(i).padEnd(1024 * 1024, ".") } });
      text(m.id, { flooded: 64 });
    }
  } else if (m.method === "notifications/initialized" && process.argv.includes("ASK_ON_INIT")) {
    send({ id: 5000 + seen.initialize, method: "ping" });
  } else if (m.method === "notifications/cancelled") {
    seen.cancelled.push(m.params.requestId);
  } else if (m.id !== undefined && m.method === undefined && waiting.has(m.id)) {
    text(waiting.get(m.id), { answer: m.result ?? null, error: m.error ?? null });
    waiting.delete(m.id);
  } else if (m.id >= 5000 && m.method === undefined) {
    seen.initAsk.push({ id: m.id, answer: m.result ?? null, error: m.error?.message ?? null });
  }
});
`;

let agent: TestAgent;
let bridge: BridgeClient;
let scripted: string;
let proxy: McpStdioProxy;
let idleProxy: McpStdioProxy;
let stallProxy: McpStdioProxy;
let httpServer: http.Server;
let base: string;
const BOT = "bot1";

/** The endpoint the tests' HTTP server offers: /c/<connection> and /idle/<connection>. */
function startHttp(): Promise<string> {
  httpServer = http.createServer((req, res) => {
    void (async () => {
      const m = /^\/(c|idle|stall)\/([0-9a-f]{24})$/.exec(req.url ?? "");
      const owner = m?.[1] === "idle" ? idleProxy : m?.[1] === "stall" ? stallProxy : proxy;
      const connection = m ? owner.get(BOT, m[2]!) : undefined;
      if (connection === undefined) {
        res.writeHead(404).end();
        return;
      }
      if (req.method === "DELETE") {
        await owner.end(BOT, connection.id);
        res.writeHead(200).end();
        return;
      }
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown) : undefined;
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) if (typeof value === "string") headers.set(name, value);
      await connection.serveHttp(new Request(`http://localhost${req.url}`, { method: req.method!, headers }), body, res);
    })().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(err));
    });
  });
  return new Promise((resolve) => httpServer.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`)));
}

before(async () => {
  agent = await startTestAgent();
  bridge = new BridgeClient(agent.agent.target);
  scripted = path.join(agent.root, "scripted.mjs");
  await fs.writeFile(scripted, SCRIPTED_SERVER);
  proxy = new McpStdioProxy({ open: (_bot, spec, handlers) => openStdioChannel(bridge, spec, handlers), idleMs: 600_000 });
  idleProxy = new McpStdioProxy({ open: (_bot, spec, handlers) => openStdioChannel(bridge, spec, handlers), idleMs: 400 });
  stallProxy = new McpStdioProxy({ open: (_bot, spec, handlers) => openStdioChannel(bridge, spec, handlers), idleMs: 3_000 });
  base = await startHttp();
});

after(async () => {
  await proxy?.close();
  await idleProxy?.close();
  await stallProxy?.close();
  httpServer?.closeAllConnections();
  await new Promise((r) => httpServer?.close(r));
  bridge?.close();
  await agent?.close();
});

const spec = (args: string[], extra: { command?: string; env?: Record<string, string> } = {}) => ({ command: extra.command ?? "node", args, env: extra.env ?? {}, cwd: "", user: "" });

async function connect(url: string, capabilities: Record<string, unknown> = {}): Promise<Client> {
  const client = new Client({ name: "memoh-proxy-test", version: "1.0.0" }, { capabilities });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return client;
}

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((c) => c.text ?? "").join("");
}

test("server-everything: the probe lists its tools; the SDK client calls them; progress of a long operation reaches the caller", async () => {
  const connection = await proxy.start(BOT, { name: "everything", spec: spec([everything, "stdio"]), probeTimeoutMs: 30_000 });
  const names = connection.tools.map((t) => t.name);
  for (const name of ["echo", "get-sum", "trigger-long-running-operation"]) assert.ok(names.includes(name), names.join(", "));
  assert.equal(connection.info().server.name, "mcp-servers/everything");

  const client = await connect(`${base}/c/${connection.id}`);
  assert.equal(client.getServerVersion()?.name, "mcp-servers/everything");
  assert.equal(textOf(await client.callTool({ name: "echo", arguments: { message: "through the proxy" } })), "Echo: through the proxy");
  assert.match(textOf(await client.callTool({ name: "get-sum", arguments: { a: 2, b: 40 } })), /42/);
  const listed = await client.listTools();
  assert.ok(listed.tools.some((t) => t.name === "echo"));
  // Not only tools: prompts and resources pass the relay as well.
  assert.ok((await client.listPrompts()).prompts.length > 0);

  const progress: Array<{ progress: number; total?: number }> = [];
  const done = await client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 1, steps: 4 } }, undefined, { onprogress: (p) => progress.push(p) });
  assert.match(textOf(done), /Long running operation completed/);
  assert.deepEqual(progress.map((p) => p.progress), [1, 2, 3, 4]);
  assert.ok(progress.every((p) => p.total === 4));
  await client.close();
  await proxy.end(BOT, connection.id);
  await waitGone([connection.pid!]);
});

test("a server request reaches the client and the client's answer reaches the server (sampling through server-everything)", async () => {
  const connection = await proxy.start(BOT, { name: "everything", spec: spec([everything, "stdio"]), probeTimeoutMs: 30_000 });
  // The server learns the client's capabilities from the client's own initialize, not the probe's.
  const client = await connect(`${base}/c/${connection.id}`, { sampling: {} });
  const asked: string[] = [];
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    const first = req.params.messages[0]?.content;
    asked.push(first && "text" in first ? String(first.text) : "");
    return { role: "assistant", content: { type: "text", text: "sampled by the test" }, model: "test-model" };
  });
  const tools = (await client.listTools()).tools.map((t) => t.name);
  assert.ok(tools.includes("trigger-sampling-request"), tools.join(", "));
  const result = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello sampler", maxTokens: 10 } });
  assert.match(textOf(result), /sampled by the test/);
  assert.match(asked.join(), /hello sampler/);
  await client.close();
  await proxy.end(BOT, connection.id);
});

test("ids are renumbered: a cancelled call reaches the server under the id it knows, and the connection goes on", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const client = await connect(`${base}/c/${connection.id}`);
  const abort = new AbortController();
  const slow = client.callTool({ name: "slow", arguments: {} }, undefined, { signal: abort.signal });
  const settled = slow.then(
    () => "answered",
    (err: unknown) => String(err),
  );
  // Wait until the server holds the call, then cancel it.
  for (let i = 0; ; i++) {
    const seen = JSON.parse(textOf(await client.callTool({ name: "seen", arguments: {} }))) as { slow: number[] };
    if (seen.slow.length === 1) break;
    assert.ok(i < 200, "the slow call never reached the server");
    await new Promise((r) => setTimeout(r, 10));
  }
  abort.abort("the test gave up");
  assert.match(await settled, /AbortError|abort|gave up/i);
  const seen = JSON.parse(textOf(await client.callTool({ name: "seen", arguments: {} }))) as { slow: number[]; cancelled: number[]; echo: number[] };
  for (let i = 0; seen.cancelled.length === 0 && i < 200; i++) {
    await new Promise((r) => setTimeout(r, 10));
    Object.assign(seen, JSON.parse(textOf(await client.callTool({ name: "seen", arguments: {} }))));
  }
  assert.deepEqual(seen.cancelled, seen.slow, "the server was told to cancel the id it received for the slow call");
  assert.equal(connection.info().requests_in_flight, 0);
  const echoed = JSON.parse(textOf(await client.callTool({ name: "echo", arguments: { after: "cancel" } }))) as { args: { after: string } };
  assert.equal(echoed.args.after, "cancel");
  await client.close();
  await proxy.end(BOT, connection.id);
});

test("a second client's initialize replaces the first session: the old session id is refused with 404, the server sees distinct ids", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const url = `${base}/c/${connection.id}`;
  const first = await connect(url);
  await first.callTool({ name: "echo", arguments: { from: "first" } });
  const second = await connect(url);
  await second.callTool({ name: "echo", arguments: { from: "second" } });
  await assert.rejects(first.callTool({ name: "echo", arguments: {} }), /404|Session not found/);
  const seen = JSON.parse(textOf(await second.callTool({ name: "seen", arguments: {} }))) as { initialize: number; echo: number[] };
  assert.equal(seen.initialize, 3, "the probe's initialize and one per client");
  assert.equal(new Set(seen.echo).size, seen.echo.length, `ids seen by the server repeat: ${seen.echo.join(",")}`);
  await first.close();
  await second.close();
  await proxy.end(BOT, connection.id);
});

test("a server request is answered with an error when no client can receive it; with a client it is relayed both ways", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted, "ASK_ON_INIT"]), probeTimeoutMs: 10_000 });
  const client = await connect(`${base}/c/${connection.id}`);
  // The server sends the client a ping while the call is in flight; the SDK client answers it.
  const answered = JSON.parse(textOf(await client.callTool({ name: "ask", arguments: {} }))) as { answer: unknown; error: unknown };
  assert.deepEqual(answered, { answer: {}, error: null });
  // Its ping after the probe's initialize had nobody to go to: answered at once with an error.
  const seen = JSON.parse(textOf(await client.callTool({ name: "seen", arguments: {} }))) as { initAsk: Array<{ id: number; answer: unknown; error: string | null }> };
  const afterProbe = seen.initAsk.find((a) => a.id === 5001);
  assert.deepEqual(afterProbe, { id: 5001, answer: null, error: "no MCP client is connected to receive ping" });
  await client.close();
  await proxy.end(BOT, connection.id);
});

test("a server that dies during a call: the caller's error names its exit code and stderr; later requests get 404 saying the same", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const client = await connect(`${base}/c/${connection.id}`);
  const logs: string[] = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    logs.push(String(n.params.data));
  });
  await assert.rejects(client.callTool({ name: "crash", arguments: {} }), (err: Error) => {
    assert.match(err.message, /exited with code 7/);
    assert.match(err.message, /scripted: crashing on request/);
    return true;
  });
  const info = proxy.list(BOT).find((c) => c.connection_id === connection.id)!;
  assert.equal(info.state, "ended");
  assert.equal(info.ended?.reason, "exited");
  assert.equal(info.ended?.exit?.code, 7);
  assert.deepEqual(info.ended?.exit?.stderr_tail, ["scripted: up", "scripted: crashing on request"]);
  const res = await fetch(`${base}/c/${connection.id}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
  });
  assert.equal(res.status, 404);
  const body = (await res.json()) as { error: { message: string; data: { exit: { code: number } } } };
  assert.match(body.error.message, /exited with code 7[\s\S]*crashing on request/);
  assert.equal(body.error.data.exit.code, 7);
  await client.close().catch(() => undefined);
  await proxy.end(BOT, connection.id);
});

test("a server that crashes at start: the error names its exit code and its stderr", async () => {
  await assert.rejects(
    proxy.start(BOT, { name: "crasher", spec: spec(["-e", "console.error('cannot open the database: no such file'); process.exit(3)"]), probeTimeoutMs: 10_000 }),
    (err: unknown) => {
      assert.ok(err instanceof McpServerStartError, String(err));
      assert.equal(err.code, "unavailable");
      assert.equal(err.exit?.code, 3);
      assert.match(err.message, /"crasher" exited with code 3 before it answered initialize/);
      assert.match(err.message, /cannot open the database: no such file/);
      assert.deepEqual(err.exit?.stderrTail, ["cannot open the database: no such file"]);
      return true;
    },
  );
  assert.ok(!proxy.list(BOT).some((c) => c.name === "crasher"), "a failed start leaves no connection");
});

test("a command that does not exist is refused with the agent's reason; nothing is left", async () => {
  await assert.rejects(proxy.start(BOT, { name: "missing", spec: spec([], { command: "no-such-mcp-server" }), probeTimeoutMs: 10_000 }), /no-such-mcp-server/);
  assert.ok(!proxy.list(BOT).some((c) => c.name === "missing"));
});

test("a server that writes 8 MB to stderr before it answers still answers", async () => {
  const noisy = path.join(agent.root, "noisy.mjs");
  await fs.writeFile(noisy, `process.stderr.write(("x".repeat(1023) + "\\n").repeat(8 * 1024), () => import(${JSON.stringify(scripted)}));\n`);
  const connection = await proxy.start(BOT, { name: "noisy", spec: spec([noisy]), probeTimeoutMs: 30_000 });
  assert.deepEqual(connection.tools.map((t) => t.name), ["echo", "slow", "crash", "seen", "ask", "flood"]);
  const client = await connect(`${base}/c/${connection.id}`);
  const echoed = JSON.parse(textOf(await client.callTool({ name: "echo", arguments: { loud: true } }))) as { args: unknown };
  assert.deepEqual(echoed.args, { loud: true });
  await client.close();
  await proxy.end(BOT, connection.id);
});

test("a server that never answers initialize: deadline_exceeded within the bound, and its process is gone", async () => {
  const marker = `stall-${process.pid}-${Date.now()}`;
  const t0 = Date.now();
  await assert.rejects(proxy.start(BOT, { name: "staller", spec: spec([scripted, "STALL", marker]), probeTimeoutMs: 1_000 }), (err: unknown) => {
    assert.ok(err instanceof McpServerStartError);
    assert.equal(err.code, "deadline_exceeded");
    assert.match(err.message, /did not answer initialize within 1 s/);
    // It exits on EOF, so its stderr is reported too.
    assert.match(err.message, /exited with code 0[\s\S]*scripted: up/);
    return true;
  });
  assert.ok(Date.now() - t0 < 1_000 + 3_000, "the bound was not kept");
  const survivors = (await fs.readdir("/proc")).filter((p) => /^\d+$/.test(p)).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker);
    } catch {
      return false;
    }
  });
  assert.deepEqual(survivors.filter((pid) => !processGone(Number(pid))), []);
});

test("an idle connection is closed and its server exits; a call in flight keeps it open; its endpoint then says why", async () => {
  const connection = await idleProxy.start(BOT, { name: "idler", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const pid = connection.pid!;
  const client = await connect(`${base}/idle/${connection.id}`);
  await client.callTool({ name: "echo", arguments: {} });
  const abort = new AbortController();
  const slow = client.callTool({ name: "slow", arguments: {} }, undefined, { signal: abort.signal }).catch((err: unknown) => String(err));
  // Well past the idle time, with the call in flight: still open.
  await new Promise((r) => setTimeout(r, 1_500));
  assert.equal(connection.state, "ready", "closed while a request was in flight");
  abort.abort();
  await slow;
  const t0 = Date.now();
  while (connection.info().state !== "ended") {
    assert.ok(Date.now() - t0 < 5_000, "an idle connection was never closed");
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(connection.info().ended?.reason, "idle");
  await waitGone([pid], 5_000);
  const res = await fetch(`${base}/idle/${connection.id}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping" }),
  });
  assert.equal(res.status, 404);
  assert.match(((await res.json()) as { error: { message: string } }).error.message, /closed after 0.4 s without a request/);
  await client.close().catch(() => undefined);
});

test("the 2.x SDK client connects as well: by default (2025 handshake) and with version negotiation (auto), which falls back to initialize", async () => {
  const { Client: Client2, StreamableHTTPClientTransport: Transport2 } = await import("@modelcontextprotocol/client");
  const connection = await proxy.start(BOT, { name: "everything", spec: spec([everything, "stdio"]), probeTimeoutMs: 30_000 });
  for (const options of [{}, { versionNegotiation: { mode: "auto" as const } }]) {
    const client = new Client2({ name: "memoh-proxy-test-2", version: "2.0.0" }, options);
    await client.connect(new Transport2(new URL(`${base}/c/${connection.id}`)));
    const result = await client.callTool({ name: "echo", arguments: { message: JSON.stringify(options) } });
    assert.equal(textOf(result), `Echo: ${JSON.stringify(options)}`);
    await client.close();
  }
  await proxy.end(BOT, connection.id);
});

test("messages of several MiB pass both ways; one over the bound is refused with a message saying so, and the connection goes on", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const client = await connect(`${base}/c/${connection.id}`);
  const big = "b".repeat(8 * 1024 * 1024);
  const echoed = JSON.parse(textOf(await client.callTool({ name: "echo", arguments: { big } }))) as { args: { big: string } };
  assert.equal(echoed.args.big.length, big.length);
  const tooBig = "t".repeat(16 * 1024 * 1024);
  await assert.rejects(client.callTool({ name: "echo", arguments: { tooBig } }), /larger than 16711680 bytes/);
  const after = JSON.parse(textOf(await client.callTool({ name: "echo", arguments: { small: 1 } }))) as { args: unknown };
  assert.deepEqual(after.args, { small: 1 });
  await client.close();
  await proxy.end(BOT, connection.id);
});

test("a client that does not read its stream holds the server's output back (nothing piles up), and is cut off after the stall bound", async () => {
  const connection = await stallProxy.start(BOT, { name: "flooder", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const url = `${base}/stall/${connection.id}`;
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "sluggard", version: "1" } } }),
  });
  const session = init.headers.get("mcp-session-id")!;
  assert.match(await init.text(), /"scripted"/);
  const sessionHeaders = { ...headers, "mcp-session-id": session, "mcp-protocol-version": "2025-06-18" };
  await (await fetch(url, { method: "POST", headers: sessionHeaders, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) })).text();
  // The GET stream takes the server's notifications; this client never reads it.
  const stream = await fetch(url, { headers: { accept: "text/event-stream", "mcp-session-id": session } });
  assert.equal(stream.status, 200);
  const t0 = Date.now();
  const flood = await fetch(url, { method: "POST", headers: sessionHeaders, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "flood", arguments: {} } }) });
  const answer = await flood.text();
  const elapsed = Date.now() - t0;
  assert.match(answer, /flooded/);
  // Had the 64 MiB been queued for the sluggish stream, the answer would have come at once.
  assert.ok(elapsed >= 2_900, `answered after ${elapsed} ms: the server's output was not held back`);
  // The stalled stream was cut off (its body ends early, or errors).
  const got = await stream.text().catch(() => "");
  assert.ok(got.length < 64 * 1024 * 1024, `the stalled stream received ${got.length} bytes`);
  await stallProxy.end(BOT, connection.id);
});

test("at most 256 requests wait on one connection: the next is answered with an error at once; ending the connection answers the waiting ones", async () => {
  const connection = await proxy.start(BOT, { name: "scripted", spec: spec([scripted]), probeTimeoutMs: 10_000 });
  const url = `${base}/c/${connection.id}`;
  const headers = { "content-type": "application/json", accept: "application/json, text/event-stream" };
  const init = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: "init", method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "crowd", version: "1" } } }),
  });
  const sessionHeaders = { ...headers, "mcp-session-id": init.headers.get("mcp-session-id")!, "mcp-protocol-version": "2025-06-18" };
  await init.text();
  const slow = (id: number) => ({ jsonrpc: "2.0", id, method: "tools/call", params: { name: "slow", arguments: {} } });
  // 256 slow calls in batches of at most 100 (the transport's batch bound); their streams stay open.
  const waiting: Response[] = [];
  for (let first = 0; first < 256; first += 100) {
    const batch = Array.from({ length: Math.min(100, 256 - first) }, (_, i) => slow(first + i));
    waiting.push(await fetch(url, { method: "POST", headers: sessionHeaders, body: JSON.stringify(batch) }));
  }
  await waitForCondition(() => connection.info().requests_in_flight === 256);
  const refused = await fetch(url, { method: "POST", headers: sessionHeaders, body: JSON.stringify(slow(1000)) });
  assert.match(await refused.text(), /too many requests in flight on this connection \(at most 256\)/);
  await proxy.end(BOT, connection.id);
  const answers = await Promise.all(waiting.map((r) => r.text()));
  const ended = answers.join("").match(/"id":\d+,"error":\{"code":-32000,"message":"the connection [0-9a-f]{24} to the MCP server \\"scripted\\" was ended"/g) ?? [];
  assert.equal(ended.length, 256);
});

async function waitForCondition(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
