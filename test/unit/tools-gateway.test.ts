// The tool gateway's transport and tools against a real bridge agent (in this
// process, on a temp socket and data dir) over real HTTP on 127.0.0.1, with the SDK's
// two clients: the 2025 line (sessions) and 2026-07-28 (stateless). The HTTP API in
// front of it (auth, the route) is tested against the real server in
// test/integration/mcp-gateway.test.ts.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { Client as LegacyClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as LegacyTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { request } from "undici";
import { BridgeClient } from "../../host/bridge/client.js";
import { RpcError, Status } from "../../proto/rpc.js";
import { ToolGateway } from "../../host/tools/gateway.js";
import { sendWebResponse, toWebRequest } from "../../host/tools/http.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";

let agent: TestAgent;
const OLD_AGENT_LACKS = new Set(["startJob", "listJobs", "getJob", "readJobOutput", "waitJob", "signalJob", "grep", "glob"]);
let bridge: BridgeClient;
let gateway: ToolGateway;
let server: http.Server;
let base: string;
const calls: Array<{ tool: string; outcome: string }> = [];

before(async () => {
  agent = await startTestAgent();
  bridge = new BridgeClient(agent.agent.target);
  // Bot "old" reaches the same agent through a client that plays an agent older than jobs and search.
  const old = new Proxy(bridge, {
    get(target, prop, receiver) {
      if (typeof prop === "string" && OLD_AGENT_LACKS.has(prop)) return () => Promise.reject(new RpcError(Status.UNIMPLEMENTED, `unknown method ${prop}`));
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  gateway = new ToolGateway({
    workspaces: { call: (bot, fn) => fn(bot === "old" ? old : bridge) },
    onToolCall: (tool, _s, outcome) => calls.push({ tool, outcome }),
    sessionIdleMs: 60_000,
    log: (msg, data) => logged.push({ level: "error", msg, data }),
    logRefused: (msg, data) => logged.push({ level: "refused", msg, data }),
  });
  // The route's job (host/api/routes/tools.ts) without Fastify: the bot comes from the path.
  server = http.createServer((req, res) => {
    void (async () => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const gone = new AbortController();
      res.on("close", () => {
        if (!res.writableFinished) gone.abort();
      });
      let parsed: unknown;
      try {
        parsed = body.length > 0 ? JSON.parse(body.toString("utf8")) : undefined;
      } catch {
        parsed = undefined;
      }
      const botId = /^\/bots\/([^/]+)\/tools$/.exec(req.url ?? "")?.[1] ?? "none";
      await sendWebResponse(res, await gateway.handle(toWebRequest(req, body.length > 0 ? body : undefined, gone.signal), { botId, tokenId: "test" }, parsed));
    })();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

after(async () => {
  server?.close();
  await gateway?.close();
  bridge?.close();
  await agent?.close();
});

const logged: Array<{ level: "error" | "refused"; msg: string; data: Record<string, unknown> }> = [];

const url = (bot = "b1") => new URL(`${base}/bots/${bot}/tools`);

async function legacyClient(bot = "b1") {
  const client = new LegacyClient({ name: "legacy-test", version: "1" });
  const transport = new LegacyTransport(url(bot));
  await client.connect(transport);
  return { client, transport };
}

async function modernClient(bot = "b1") {
  const client = new ModernClient({ name: "modern-test", version: "1" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
  await client.connect(new ModernTransport(url(bot)));
  return client;
}

function text(r: object): string {
  const c = ((r as { content?: unknown }).content as Array<{ type: string; text?: string }>)[0]!;
  assert.equal(c.type, "text");
  return c.text!;
}

const INIT = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } } };
const JSON_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

test("a 2025-line client opens a session, lists the tools and calls them; 2025-11-25 is negotiated", async () => {
  const { client, transport } = await legacyClient();
  assert.match(transport.sessionId ?? "", /^[0-9a-f-]{36}$/);
  assert.equal(transport.protocolVersion, "2025-11-25");
  const tools = (await client.listTools()).tools;
  assert.deepEqual(tools.map((t) => t.name).sort(), ["apply_patch", "edit", "exec", "get_background_status", "glob", "grep", "kill_background", "list", "list_background", "list_skills", "read", "use_skill", "wait_until", "write"]);
  const read = tools.find((t) => t.name === "read")!;
  assert.equal((read.inputSchema.properties as Record<string, { description?: string }>).path!.description, "The file: absolute, or relative to /data");
  assert.match(text(await client.callTool({ name: "write", arguments: { path: "legacy/hello.txt", content: "hello\n" } })), /Wrote 6 bytes to legacy\/hello\.txt \(new file\)/);
  assert.equal(await fs.readFile(path.join(agent.dataDir, "legacy/hello.txt"), "utf8"), "hello\n");
  assert.equal(text(await client.callTool({ name: "read", arguments: { path: "legacy/hello.txt" } })), "     1\thello\n[lines 1-1 of 1]");
  await client.ping();
  await transport.terminateSession();
});

test("a 2026-07-28 client works without a session: discover, list, call", async () => {
  const client = await modernClient();
  assert.equal(client.getServerVersion()?.name, "memoh-workspace-tools");
  assert.equal((await client.listTools()).tools.length, 14);
  await fs.writeFile(path.join(agent.dataDir, "modern.txt"), "a\nb\nc\n");
  assert.equal(text(await client.callTool({ name: "read", arguments: { path: "modern.txt", line_offset: 2, n_lines: 1 } })), "     2\tb\n[lines 2-2 of 3; continue with line_offset=3]");
  await client.close();
});

test("bad input is an isError result the model can act on, never a protocol error", async () => {
  const client = await modernClient();
  const unknownField = await client.callTool({ name: "read", arguments: { file: "x" } });
  assert.equal(unknownField.isError, true);
  assert.match(text(unknownField), /Invalid arguments for tool read: .*path.*Unrecognized key: "file"/s);
  const missing = await client.callTool({ name: "read", arguments: { path: "no/such/file" } });
  assert.equal(missing.isError, true);
  assert.equal(text(missing), "no/such/file does not exist");
  const past = await client.callTool({ name: "read", arguments: { path: "modern.txt", line_offset: 9 } });
  assert.match(text(past), /line_offset 9 is past the end of modern\.txt, which has 3 lines/);
  await fs.writeFile(path.join(agent.dataDir, "blob.bin"), Buffer.from([0, 1, 2, 3]));
  assert.match(text(await client.callTool({ name: "read", arguments: { path: "blob.bin" } })), /binary file .*exec/);
  assert.ok(calls.some((c) => c.tool === "read" && c.outcome === "error"), "errors are counted by tool");
  await client.close();
});

test("an unknown session id is 404, a missing one 400, another bot's session 404", async () => {
  const unknown = await request(url(), { method: "POST", headers: { ...JSON_HEADERS, "mcp-session-id": "00000000-0000-0000-0000-000000000000" }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
  assert.equal(unknown.statusCode, 404);
  assert.equal(((await unknown.body.json()) as { error: { code: number } }).error.code, -32001);
  const missing = await request(url(), { method: "POST", headers: JSON_HEADERS, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
  assert.equal(missing.statusCode, 400);
  await missing.body.dump();
  const getWithout = await request(url(), { method: "GET", headers: { accept: "text/event-stream" } });
  assert.equal(getWithout.statusCode, 400);
  await getWithout.body.dump();

  const { transport } = await legacyClient("b1");
  const other = await request(url("b2"), { method: "POST", headers: { ...JSON_HEADERS, "mcp-session-id": transport.sessionId!, "mcp-protocol-version": "2025-11-25" }, body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) });
  assert.equal(other.statusCode, 404, "a session is reachable only through its own bot's gateway");
  await other.body.dump();
  await transport.terminateSession();
});

test("DELETE ends a session; an idle session is evicted and then answers 404", async () => {
  const before = gateway.sessionCount;
  const { client, transport } = await legacyClient();
  const sid = transport.sessionId!;
  assert.equal(gateway.sessionCount, before + 1);
  await transport.terminateSession();
  assert.equal(gateway.sessionCount, before);
  const after = await request(url(), { method: "POST", headers: { ...JSON_HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-11-25" }, body: JSON.stringify({ jsonrpc: "2.0", id: 3, method: "ping" }) });
  assert.equal(after.statusCode, 404);
  await after.body.dump();
  await client.close();

  const second = await legacyClient();
  assert.equal(gateway.evictIdle(Date.now() + 30_000), 0, "a session used just now is kept");
  assert.ok(gateway.evictIdle(Date.now() + 61_000) >= 1, "a session idle past the idle time is closed");
  await assert.rejects(second.client.listTools(), /404|Session not found/);
  await second.client.close().catch(() => undefined);
});

test("a foreign Origin or Host is refused with 403 on both lines, before any session exists", async () => {
  const init = await request(url(), { method: "POST", headers: { ...JSON_HEADERS, origin: "http://evil.example" }, body: JSON.stringify(INIT) });
  assert.equal(init.statusCode, 403);
  assert.match(JSON.stringify(await init.body.json()), /origin http:\/\/evil\.example are not allowed/);
  const discover = {
    jsonrpc: "2.0",
    id: 1,
    method: "server/discover",
    params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientInfo": { name: "x", version: "1" }, "io.modelcontextprotocol/clientCapabilities": {} } },
  };
  const modern = await request(url(), { method: "POST", headers: { ...JSON_HEADERS, host: "evil.example", "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover" }, body: JSON.stringify(discover) });
  assert.equal(modern.statusCode, 403);
  await modern.body.dump();
  const local = await request(url(), { method: "POST", headers: { ...JSON_HEADERS, origin: "http://localhost:3000" }, body: JSON.stringify(INIT) });
  assert.equal(local.statusCode, 200, "a loopback origin is fine");
  const sid = local.headers["mcp-session-id"];
  await local.body.dump();
  await request(url(), { method: "DELETE", headers: { "mcp-session-id": String(sid), "mcp-protocol-version": "2025-11-25" } }).then((r) => r.body.dump());
});

test("edit keeps CRLF and the BOM, refuses an ambiguous match naming the count and lines", async () => {
  const client = await modernClient();
  const file = path.join(agent.dataDir, "crlf.txt");
  await fs.writeFile(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("alpha\r\nbeta\r\nalpha\r\n")]));
  const ambiguous = await client.callTool({ name: "edit", arguments: { path: "crlf.txt", old_text: "alpha", new_text: "omega" } });
  assert.equal(ambiguous.isError, true);
  assert.match(text(ambiguous), /old_text matches 2 places in crlf\.txt, at lines 1 and 3; include more surrounding lines/);
  const ok = await client.callTool({ name: "edit", arguments: { path: "crlf.txt", old_text: "beta\nalpha", new_text: "beta\ngamma\nalpha" } });
  assert.equal(text(ok), "Replaced 1 occurrence in crlf.txt.");
  assert.deepEqual(await fs.readFile(file), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("alpha\r\nbeta\r\ngamma\r\nalpha\r\n")]));
  const same = await client.callTool({ name: "edit", arguments: { path: "crlf.txt", old_text: "gamma", new_text: "gamma" } });
  assert.match(text(same), /would not change/);
  await client.close();
});

test("apply_patch whose third file does not apply changes nothing; a whole patch applies", async () => {
  const client = await modernClient();
  const dir = path.join(agent.dataDir, "p");
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, "one.txt"), "1\n2\n3\n");
  await fs.writeFile(path.join(dir, "two.txt"), "a\r\nb\r\n");
  await fs.writeFile(path.join(dir, "three.txt"), "x\ny\n");
  const failing = [
    "*** Begin Patch",
    "*** Update File: p/one.txt",
    " 1",
    "-2",
    "+two",
    "*** Add File: p/new/four.txt",
    "+four",
    "*** Update File: p/three.txt",
    " x",
    "-not there",
    "+z",
    "*** End Patch",
  ].join("\n");
  const r = await client.callTool({ name: "apply_patch", arguments: { patch: failing } });
  assert.equal(r.isError, true);
  assert.match(text(r), /file 3 of the patch \(p\/three\.txt, patch line 8\): hunk 1 of p\/three\.txt .*these lines are not in the file.*Nothing was changed\./s);
  assert.equal(await fs.readFile(path.join(dir, "one.txt"), "utf8"), "1\n2\n3\n");
  await assert.rejects(fs.stat(path.join(dir, "new")), { code: "ENOENT" });

  const good = [
    "*** Begin Patch",
    "*** Update File: p/one.txt",
    "@@ 1",
    "-2",
    "+two",
    "*** Update File: p/two.txt",
    "*** Move to: p/moved/two.txt",
    " a",
    "+between",
    " b",
    "*** Delete File: p/three.txt",
    "*** Add File: p/new/four.txt",
    "+four",
    "*** End Patch",
  ].join("\n");
  assert.equal(text(await client.callTool({ name: "apply_patch", arguments: { patch: good } })), "Applied the patch:\nM p/one.txt\nR p/two.txt -> p/moved/two.txt\nD p/three.txt\nA p/new/four.txt");
  assert.equal(await fs.readFile(path.join(dir, "one.txt"), "utf8"), "1\ntwo\n3\n");
  assert.equal(await fs.readFile(path.join(dir, "moved/two.txt"), "utf8"), "a\r\nbetween\r\nb\r\n", "CRLF kept through a patch");
  await assert.rejects(fs.stat(path.join(dir, "two.txt")), { code: "ENOENT" });
  await assert.rejects(fs.stat(path.join(dir, "three.txt")), { code: "ENOENT" });
  assert.equal(await fs.readFile(path.join(dir, "new/four.txt"), "utf8"), "four\n");
  await client.close();
});

test("list: entries with sizes, paging, and recursive listings that collapse large directories", async () => {
  const client = await modernClient();
  const root = path.join(agent.dataDir, "tree");
  await fs.mkdir(path.join(root, "src"), { recursive: true });
  await fs.mkdir(path.join(root, "node_modules"), { recursive: true });
  await fs.writeFile(path.join(root, "src", "a.ts"), "x");
  for (let i = 0; i < 60; i++) await fs.writeFile(path.join(root, "node_modules", `m${i}`), "");
  const flat = text(await client.callTool({ name: "list", arguments: { path: "tree" } }));
  assert.equal(flat, "node_modules/\nsrc/\n[entries 1-2 of 2 in tree]");
  const rec = text(await client.callTool({ name: "list", arguments: { path: "tree", recursive: true } }));
  assert.equal(rec, "node_modules/ (60 entries, not expanded: list this directory to see them)\nsrc/\nsrc/a.ts (1 bytes)\n[lines 1-3 of 3 below tree (63 entries in all)]");
  const page = text(await client.callTool({ name: "list", arguments: { path: "tree/node_modules", offset: 10, limit: 5 } }));
  assert.equal(page, "m18 (0 bytes)\nm19 (0 bytes)\nm2 (0 bytes)\nm20 (0 bytes)\nm21 (0 bytes)\n[entries 11-15 of 60 in tree/node_modules; continue with offset=15]");
  const tooMany = await client.callTool({ name: "list", arguments: { path: "tree", limit: 500 } });
  assert.equal(tooMany.isError, true);
  await client.close();
});

test("a large write is streamed with progress notifications and lands whole", async () => {
  const client = await modernClient();
  const content = "0123456789abcdef".repeat(200_000); // 3.2 MB
  const progress: number[] = [];
  const r = await client.callTool({ name: "write", arguments: { path: "big/large.txt", content } }, { onprogress: (p) => progress.push(p.progress) });
  assert.equal(text(r), `Wrote ${content.length} bytes to big/large.txt (new file).`);
  assert.equal(await fs.readFile(path.join(agent.dataDir, "big/large.txt"), "utf8"), content);
  assert.ok(progress.length >= 2, `progress notifications: ${progress.join(",")}`);
  assert.equal(progress[progress.length - 1], content.length);
  // read refuses nothing up to 16 MiB: this one comes through ReadRaw on the host side only past 8 MiB, here through ReadFile.
  assert.match(text(await client.callTool({ name: "read", arguments: { path: "big/large.txt", n_lines: 1 } })), /\[lines 1-1 of 1; 1 long line cut\]$/);
  await client.close();
});

test("/data files are resources through a template; a missing one is an error naming it", async () => {
  const client = await modernClient();
  await fs.writeFile(path.join(agent.dataDir, "notes.md"), "# notes\n");
  const templates = await client.listResourceTemplates();
  assert.deepEqual(templates.resourceTemplates.map((t) => t.uriTemplate), ["file:///data/{+path}"]);
  const listed = await client.listResources();
  assert.ok(listed.resources.some((r) => r.uri === "file:///data/notes.md" && r.mimeType === "text/markdown"));
  const read = await client.readResource({ uri: "file:///data/notes.md" });
  assert.deepEqual(read.contents, [{ uri: "file:///data/notes.md", mimeType: "text/markdown", text: "# notes\n" }]);
  const bin = await client.readResource({ uri: "file:///data/blob.bin" });
  assert.equal((bin.contents[0] as { blob?: string }).blob, Buffer.from([0, 1, 2, 3]).toString("base64"));
  await assert.rejects(client.readResource({ uri: "file:///data/missing.txt" }), /missing\.txt does not exist/);
  await assert.rejects(client.readResource({ uri: "file:///data/..%2F..%2Fetc%2Fpasswd" }), /not a file under \/data/);
  await client.close();
});

async function gone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("exec: exit code, stdout and stderr; a command outliving its timeout moves to the background; long output keeps head and tail", async () => {
  const client = await modernClient();
  assert.equal(text(await client.callTool({ name: "exec", arguments: { command: "echo out; echo err >&2; exit 3", work_dir: agent.dataDir } })).replace(/, \d+\.\d s\]/, "]"), "[exit code 3]\n--- stdout (4 bytes, 1 lines) ---\nout\n--- stderr (4 bytes, 1 lines) ---\nerr\n");
  const timedOut = text(await client.callTool({ name: "exec", arguments: { command: "echo begun; sleep 20", work_dir: agent.dataDir, timeout: 1 } }));
  assert.match(timedOut, /^\[still running after 1 s: moved to the background as job (job-[0-9a-f]{12}) \(pid \d+\); wait_until/);
  assert.match(timedOut, /--- stdout so far \(6 bytes, 1 lines\) ---\nbegun\n/);
  const id = /job-[0-9a-f]{12}/.exec(timedOut)![0];
  assert.match(text(await client.callTool({ name: "kill_background", arguments: { task_id: id } })), new RegExp(`^Killed job ${id} and its process group: ${id}  killed \\(SIGKILL, exit code 137\\)`));
  const long = text(await client.callTool({ name: "exec", arguments: { command: "seq 1 100000", work_dir: agent.dataDir } }));
  assert.match(long, /^\[exit code 0, .*\]\n--- stdout \(588895 bytes, 100000 lines, truncated\) ---\n1\n2\n/);
  assert.match(long, /\[\.\.\. \d+ lines, \d+ bytes omitted: output over 2000 lines or 65536 bytes keeps its head and tail \.\.\.\]\n/);
  assert.match(long, /\n99999\n100000\n--- stderr: empty ---\n$/);
  const badDir = await client.callTool({ name: "exec", arguments: { command: "true", work_dir: "/no/such/dir" } });
  assert.equal(badDir.isError, true);
  await client.close();
});

test("exec sends progress while it runs", async () => {
  const { client, transport } = await legacyClient();
  const seen: number[] = [];
  const r = await client.callTool({ name: "exec", arguments: { command: "sleep 2.5; echo done", work_dir: agent.dataDir } }, undefined, { onprogress: (p) => seen.push(p.progress) });
  assert.match(text(r), /^\[exit code 0/);
  // Progress is the whole seconds the command has run (2.5 s here), one notification a
  // second; a tick the loaded machine delays may skip a value, so only the shape is fixed.
  assert.ok(seen.length >= 2, `at least two progress notifications in 2.5 s: ${seen.join(", ")}`);
  assert.ok(seen.every((v, i) => v >= 1 && v <= 3 && (i === 0 || v > seen[i - 1]!)), `progress must be whole seconds of 1–3, increasing: ${seen.join(", ")}`);
  await transport.terminateSession();
});

for (const line of ["2025", "2026-07-28"] as const) {
  test(`a cancelled exec (${line} client) kills the command's whole process group`, async () => {
    const pidFile = path.join(agent.dataDir, `cancel-${line}.pid`);
    const controller = new AbortController();
    const command = `sleep 300 & echo $! > ${pidFile}; wait`;
    let call: Promise<unknown>;
    let close: () => Promise<void>;
    if (line === "2025") {
      const { client, transport } = await legacyClient();
      call = client.callTool({ name: "exec", arguments: { command, work_dir: agent.dataDir, timeout: 600 } }, undefined, { signal: controller.signal });
      close = () => transport.terminateSession();
    } else {
      const client = await modernClient();
      call = client.callTool({ name: "exec", arguments: { command, work_dir: agent.dataDir, timeout: 600 } }, { signal: controller.signal });
      close = () => client.close();
    }
    call.catch(() => undefined);
    const deadline = Date.now() + 10_000;
    while (!(await fs.readFile(pidFile, "utf8").catch(() => "")).trim()) {
      assert.ok(Date.now() < deadline, "the command did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
    const pid = Number((await fs.readFile(pidFile, "utf8")).trim());
    assert.equal(await gone(pid, 300), false, "the background child runs");
    controller.abort();
    await assert.rejects(call);
    assert.equal(await gone(pid), true, "the background child of the cancelled command was killed");
    await close();
  });
}

test("background jobs: run_in_background, list_background, get_background_status, wait_until with its reasons", async () => {
  const client = await modernClient();
  const started = text(await client.callTool({ name: "exec", arguments: { command: "echo one; sleep 0.3; echo two >&2; exit 4", work_dir: agent.dataDir, run_in_background: true } }));
  const id = /^Started background job (job-[0-9a-f]{12}) \(pid \d+\)/.exec(started)![1]!;
  const waited = text(await client.callTool({ name: "wait_until", arguments: { task_id: id, timeout: 10 } }));
  assert.match(waited, new RegExp(`^\\[failed: the job failed\\]\\n${id}  failed \\(exit code 4\\)  \\d+\\.\\d s  pid \\d+  echo one; sleep 0\\.3; echo two >&2; exit 4\\n--- stdout \\(4 bytes\\) ---\\none\\n--- stderr \\(4 bytes\\) ---\\ntwo\\n$`));
  assert.match(text(await client.callTool({ name: "list_background", arguments: {} })), new RegExp(`background jobs?:\\n(.*\\n)*${id}  failed`));
  assert.match(text(await client.callTool({ name: "get_background_status", arguments: { task_id: id } })), new RegExp(`^${id}  failed \\(exit code 4\\)`));
  const quiet = text(await client.callTool({ name: "exec", arguments: { command: "echo hi; sleep 30", work_dir: agent.dataDir, run_in_background: true } }));
  const quietId = /job-[0-9a-f]{12}/.exec(quiet)![0];
  assert.match(text(await client.callTool({ name: "wait_until", arguments: { task_id: quietId, timeout: 10, idle_timeout: 1 } })), /^\[idle: the job is still running but wrote no output for the idle timeout\]\n.*running.*\n--- stdout \(3 bytes\) ---\nhi\n--- stderr: empty ---\n$/);
  assert.match(text(await client.callTool({ name: "wait_until", arguments: { task_id: quietId, timeout: 1, idle_timeout: 0 } })), /^\[timeout: the job is still running at the timeout\]/);
  assert.match(text(await client.callTool({ name: "kill_background", arguments: { task_id: quietId } })), /^Killed job/);
  assert.match(text(await client.callTool({ name: "wait_until", arguments: { task_id: quietId, timeout: 5 } })), /^\[killed: the job was killed\]/);
  assert.match(text(await client.callTool({ name: "kill_background", arguments: { task_id: quietId } })), /had already ended/);
  const badId = await client.callTool({ name: "get_background_status", arguments: { task_id: "12" } });
  assert.equal(badId.isError, true);
  assert.match(text(badId), /task_id is a job id such as job-0123456789ab/);
  const unknown = await client.callTool({ name: "wait_until", arguments: { task_id: "job-0123456789ab" } });
  assert.equal(unknown.isError, true);
  assert.match(text(unknown), /there is no background job job-0123456789ab in this workspace.*list_background/);
  const tooLong = await client.callTool({ name: "wait_until", arguments: { task_id: id, timeout: 99999 } });
  assert.equal(tooLong.isError, true);
  await client.close();
});

test("grep and glob are run by the agent: matches, filters, limits, and bad patterns as isError", async () => {
  const client = await modernClient();
  await fs.mkdir(path.join(agent.dataDir, "g", "sub"), { recursive: true });
  await fs.writeFile(path.join(agent.dataDir, "g", "a.py"), "def main():\n    pass\n");
  await fs.writeFile(path.join(agent.dataDir, "g", "sub", "b.py"), "MAIN = 1\n");
  const abs = path.join(agent.dataDir, "g");
  assert.equal(text(await client.callTool({ name: "grep", arguments: { pattern: "main", path: abs, ignore_case: true } })), `${abs}/a.py:1: def main():\n${abs}/sub/b.py:1: MAIN = 1\n[2 matching lines in 2 files; 2 files searched]`);
  assert.equal(text(await client.callTool({ name: "grep", arguments: { pattern: "main", path: abs, max_results: 1, ignore_case: true } })), `${abs}/a.py:1: def main():\n[1 matching line in 1 file; 1 file searched; stopped at max_results: narrow the pattern, path or glob to see the rest]`);
  assert.equal(text(await client.callTool({ name: "grep", arguments: { pattern: "nothing", path: abs, glob: "*.py" } })), "No matches.\n[0 matching lines in 0 files; 2 files searched]");
  const badRe = await client.callTool({ name: "grep", arguments: { pattern: "(", path: abs } });
  assert.equal(badRe.isError, true);
  assert.match(text(badRe), /pattern is not a valid regular expression/);
  assert.equal(text(await client.callTool({ name: "glob", arguments: { pattern: "**/*.py", path: abs } })), `a.py\nsub/b.py\n[2 paths matching **/*.py under ${abs}]`);
  const badGlob = await client.callTool({ name: "glob", arguments: { pattern: "{a", path: abs } });
  assert.equal(badGlob.isError, true);
  assert.match(text(badGlob), /has a "\{" without its "\}"/);
  await client.close();
});

test("wait_until sends progress while it waits; cancelling it leaves the job running", async () => {
  const { client, transport } = await legacyClient();
  const started = text(await client.callTool({ name: "exec", arguments: { command: "sleep 30", work_dir: agent.dataDir, run_in_background: true } }));
  const id = /job-[0-9a-f]{12}/.exec(started)![0];
  const seen: number[] = [];
  const r = await client.callTool({ name: "wait_until", arguments: { task_id: id, timeout: 3, idle_timeout: 0 } }, undefined, { onprogress: (p) => seen.push(p.progress) });
  assert.match(text(r), /^\[timeout:/);
  // Progress is the whole seconds waited (of the 3 s timeout), one notification a second;
  // a tick the loaded machine delays may skip a value, so only the shape is fixed here.
  assert.ok(seen.length >= 2, `at least two progress notifications in 3 s: ${seen.join(", ")}`);
  assert.ok(seen.every((v, i) => v >= 1 && v <= 3 && (i === 0 || v > seen[i - 1]!)), `progress must be whole seconds of 1–3, increasing: ${seen.join(", ")}`);
  const controller = new AbortController();
  let progressed!: () => void;
  const inFlight = new Promise<void>((res) => (progressed = res));
  const waiting = client.callTool({ name: "wait_until", arguments: { task_id: id, timeout: 60 } }, undefined, { signal: controller.signal, onprogress: () => progressed() });
  waiting.catch(() => undefined);
  await inFlight;
  controller.abort();
  await assert.rejects(waiting);
  assert.match(text(await client.callTool({ name: "get_background_status", arguments: { task_id: id } })), new RegExp(`^${id}  running`));
  assert.match(text(await client.callTool({ name: "kill_background", arguments: { task_id: id } })), /^Killed job/);
  await transport.terminateSession();
});

test("an agent older than jobs and search: exec runs on Exec and is killed at its timeout; the other tools say to restart the workspace", async () => {
  const client = await modernClient("old");
  assert.match(text(await client.callTool({ name: "exec", arguments: { command: "echo still works", work_dir: agent.dataDir } })), /^\[exit code 0, [\d.]+ s\]\n--- stdout \(12 bytes, 1 lines\) ---\nstill works\n/);
  assert.match(text(await client.callTool({ name: "exec", arguments: { command: "sleep 20", work_dir: agent.dataDir, timeout: 1 } })), /^\[timed out after 1 s and was killed \(exit code 137\)/);
  const bg = await client.callTool({ name: "exec", arguments: { command: "sleep 1", work_dir: agent.dataDir, run_in_background: true } });
  assert.equal(bg.isError, true);
  assert.match(text(bg), /older than background jobs; run the command without run_in_background, or restart the workspace/);
  for (const [name, args] of [["grep", { pattern: "x" }], ["glob", { pattern: "*" }], ["list_background", {}], ["wait_until", { task_id: "job-0123456789ab" }]] as const) {
    const r = await client.callTool({ name, arguments: args });
    assert.equal(r.isError, true, name);
    assert.match(text(r), /the workspace's agent is older than this tool .* restart the workspace/, name);
  }
  await client.close();
});

test("malformed requests of the 2026-07-28 line are refused with 400 and logged as refused, never as server errors", async () => {
  const headers = { ...JSON_HEADERS, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list" };
  const cases: Array<[string, RegExp]> = [
    [JSON.stringify({ jsonrpc: "2.0", id: 1, method: 5 }), /not a valid JSON-RPC message/],
    [JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }), /missing the required per-request envelope/],
  ];
  for (const [body, why] of cases) {
    logged.length = 0;
    const res = await request(url(), { method: "POST", headers, body });
    assert.equal(res.statusCode, 400);
    assert.match(await res.body.text(), why);
    assert.deepEqual(logged.filter((l) => l.level === "error"), [], "a client's mistake was logged as a server error");
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.msg, "mcp request refused");
    assert.equal(logged[0]!.data.status, 400);
    assert.match(String(logged[0]!.data.err), why);
  }
});
