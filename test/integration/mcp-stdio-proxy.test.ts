// MCP stdio servers in real workspaces through the real server process: a test image
// (busybox, no libc) with @modelcontextprotocol/server-everything and
// @modelcontextprotocol/server-filesystem under /opt/servers, run by the runtime's own
// node; the official SDK client (2025 line) talks to each connection's endpoint over
// HTTP with bearer tokens. Crashes, noisy stderr, auth, Origin, DELETE and idle
// eviction, all against the same private containerd.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { request } from "undici";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { buildTestImages, deriveImage, writeOciLayout, type LayerEntry } from "./env/images.js";
import { REPO_ROOT, startServerEnv, type ServerEnv } from "./env/server.js";
import { waitFor } from "./env/workspace.js";

const IMAGE = "memoh.test/mcp-servers:latest";
const SERVERS = "/opt/servers";
const EVERYTHING = `${SERVERS}/node_modules/@modelcontextprotocol/server-everything/dist/index.js`;
const FILESYSTEM = `${SERVERS}/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js`;
const IDLE_S = 5;
const BOT = "mcp-a";
const OTHER = "mcp-b";

let s: ServerEnv;
/** Why server-filesystem could not be put in the image (its test fails with this), if it could not. */
let filesystemMissing: Error | undefined;
let botToken: string;
let otherToken: string;
const clients: Client[] = [];

// ---------------------------------------------------------------- the image

/** The package and every dependency it resolves to, the way node resolves them from this checkout. */
function packageClosure(name: string): string[] {
  const resolve = (fromDir: string, dep: string): string | undefined => {
    for (let dir = fromDir; ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, "node_modules", dep);
      if (fs.existsSync(path.join(candidate, "package.json"))) return candidate;
      if (dir === REPO_ROOT || dir === path.dirname(dir)) return undefined;
    }
  };
  const start = resolve(REPO_ROOT, name);
  if (start === undefined) throw new Error(`${name} is not installed in ${REPO_ROOT}/node_modules: it is a devDependency of this project (npm ci)`);
  const seen = new Set([start]);
  for (const dir of seen) {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { dependencies?: Record<string, string> };
    for (const dep of Object.keys(pkg.dependencies ?? {})) {
      const found = resolve(dir, dep);
      if (found === undefined) throw new Error(`${dep} (a dependency of ${path.relative(REPO_ROOT, dir)}) is not installed`);
      seen.add(found);
    }
  }
  return [...seen];
}

/** Layer entries putting these package dirs under /opt/servers, laid out as in this checkout (nested node_modules handled as packages of their own). */
function serverEntries(packageDirs: string[]): LayerEntry[] {
  const entries = new Map<string, LayerEntry>();
  const addDirs = (rel: string) => {
    for (let d = path.dirname(rel); d !== "." && d !== "/"; d = path.dirname(d)) entries.set(`${SERVERS}/${d}`, { path: `${SERVERS}/${d}`, type: "dir", mode: 0o755 });
  };
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== "node_modules") walk(full);
      } else if (e.isFile() && !/\.(map|d\.ts|d\.mts|d\.cts|md)$/.test(e.name)) {
        const rel = path.relative(REPO_ROOT, full);
        addDirs(rel);
        entries.set(`${SERVERS}/${rel}`, { path: `${SERVERS}/${rel}`, type: "file", mode: fs.statSync(full).mode & 0o111 ? 0o755 : 0o644, data: fs.readFileSync(full) });
      }
    }
  };
  for (const dir of packageDirs) walk(dir);
  return [...entries.values()];
}

before(async () => {
  const closure = packageClosure("@modelcontextprotocol/server-everything");
  try {
    closure.push(...packageClosure("@modelcontextprotocol/server-filesystem"));
  } catch (err) {
    filesystemMissing = err as Error;
  }
  s = await startServerEnv({ extraEnv: { MEMOH_MCP_STDIO_IDLE_S: String(IDLE_S) } });
  const base = (await buildTestImages()).busybox.image;
  const image = await deriveImage(base, IMAGE, serverEntries([...new Set(closure)]), { env: ["PATH=/bin"] });
  const tar = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "memoh-mcp-image-")), "image.oci.tar");
  await writeOciLayout([image], tar);
  await s.env.ctr(["images", "import", "--all-platforms", tar]);
  fs.rmSync(path.dirname(tar), { recursive: true, force: true });
  for (const bot of [BOT, OTHER]) {
    const r = await call("POST", `/bots/${bot}/container`, { body: { image: IMAGE } });
    assert.equal(r.status, 200, r.text);
  }
  botToken = await createToken(BOT);
  otherToken = await createToken(OTHER);
});

after(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await s?.close();
});

// ---------------------------------------------------------------- helpers

type Json = Record<string, unknown>;

async function call(method: string, route: string, opts: { body?: unknown; token?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { authorization: `Bearer ${opts.token ?? s.adminToken}`, ...opts.headers };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await request(`${s.url}${route}`, { method: method as "GET", headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
  const text = await res.body.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // not JSON
  }
  return { status: res.statusCode, text, json };
}

async function createToken(bot: string): Promise<string> {
  const r = await call("POST", "/tokens", { body: { bot_id: bot, name: "mcp-stdio test" } });
  assert.equal(r.status, 200, r.text);
  return r.json.token as string;
}

interface Started {
  connection_id: string;
  url: string;
  pid: number;
  tools: Array<{ name: string }>;
  server: { name: string | null };
}

async function startServer(body: Json, token = botToken, bot = BOT): Promise<Started> {
  const r = await call("POST", `/bots/${bot}/mcp-stdio`, { body, token });
  assert.equal(r.status, 200, r.text);
  return r.json as unknown as Started;
}

async function connect(url: string, token = botToken): Promise<Client> {
  return (await connectWithTransport(url, token)).client;
}

async function connectWithTransport(url: string, token = botToken): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
  const client = new Client({ name: "memoh-integration", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  clients.push(client);
  return { client, transport };
}

function textOf(result: unknown): string {
  return ((result as { content?: Array<{ text?: string }> }).content ?? []).map((c) => c.text ?? "").join("");
}

/** Whether a process with this pid exists in the bot's workspace (its own pid namespace). */
async function runsInWorkspace(bot: string, pid: number): Promise<boolean> {
  const r = await call("POST", `/bots/${bot}/container/exec`, { body: { argv: ["/bin/busybox", "test", "-d", `/proc/${pid}`] } });
  assert.equal(r.status, 200, r.text);
  return r.json.exit_code === 0;
}

async function listConnections(bot = BOT, token = botToken): Promise<Array<Json & { connection_id: string; state: string; ended: Json | null }>> {
  const r = await call("GET", `/bots/${bot}/mcp-stdio`, { token });
  assert.equal(r.status, 200, r.text);
  return r.json.connections as Array<Json & { connection_id: string; state: string; ended: Json | null }>;
}

// ---------------------------------------------------------------- tests

test("server-everything in a workspace without libc: tools listed at start; the SDK client calls them, with progress from the long-running operation; the connection is listed", async () => {
  const started = await startServer({ name: "everything", command: "node", args: [EVERYTHING, "stdio"] });
  assert.match(started.url, new RegExp(`^${s.url}/bots/${BOT}/mcp-stdio/[0-9a-f]{24}$`));
  assert.equal(started.server.name, "mcp-servers/everything");
  const names = started.tools.map((t) => t.name);
  for (const name of ["echo", "get-sum", "trigger-long-running-operation"]) assert.ok(names.includes(name), names.join(", "));
  assert.ok(await runsInWorkspace(BOT, started.pid), "the server's pid is not a process of the workspace");

  const { client, transport } = await connectWithTransport(started.url);
  assert.equal(textOf(await client.callTool({ name: "echo", arguments: { message: "from the host" } })), "Echo: from the host");
  assert.match(textOf(await client.callTool({ name: "get-sum", arguments: { a: 19, b: 23 } })), /42/);
  const progress: number[] = [];
  const done = await client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 2, steps: 4 } }, undefined, { onprogress: (p) => progress.push(p.progress) });
  assert.match(textOf(done), /Long running operation completed/);
  assert.deepEqual(progress, [1, 2, 3, 4]);

  const listed = (await listConnections()).find((c) => c.connection_id === started.connection_id);
  assert.equal(listed?.state, "ready");
  assert.equal(listed?.session_open, true);
  assert.equal(listed?.pid, started.pid);
  assert.equal(listed?.url, started.url);
  // The endpoint without `Accept: text/event-stream` describes the connection.
  const described = await call("GET", new URL(started.url).pathname, { token: botToken, headers: { accept: "application/json" } });
  assert.equal(described.status, 200, described.text);
  assert.equal(described.json.connection_id, started.connection_id);
  assert.equal((described.json.server as Json).name, "mcp-servers/everything");
  // The client ending its session (DELETE with its Mcp-Session-Id) ends the connection and the server.
  await transport.terminateSession();
  await waitFor("the server to be gone after the session ended", async () => ((await runsInWorkspace(BOT, started.pid)) ? undefined : true), 10_000);
  assert.ok(!(await listConnections()).some((c) => c.connection_id === started.connection_id));
  await client.close();
});

test("server-filesystem in the workspace: write, read and list files of /data through the proxy", async () => {
  if (filesystemMissing !== undefined) throw filesystemMissing;
  const started = await startServer({ name: "filesystem", command: "node", args: [FILESYSTEM, "/data"] });
  const names = started.tools.map((t) => t.name);
  for (const name of ["write_file", "read_text_file", "list_directory"]) assert.ok(names.includes(name), names.join(", "));
  const client = await connect(started.url);
  const made = await client.callTool({ name: "create_directory", arguments: { path: "/data/notes" } });
  assert.equal(made.isError ?? false, false, textOf(made));
  const written = await client.callTool({ name: "write_file", arguments: { path: "/data/notes/mcp.txt", content: "written through the stdio proxy\n" } });
  assert.equal(written.isError ?? false, false, textOf(written));
  const read = await client.callTool({ name: "read_text_file", arguments: { path: "/data/notes/mcp.txt" } });
  assert.equal(read.isError ?? false, false, textOf(read));
  assert.match(textOf(read), /written through the stdio proxy/);
  assert.match(textOf(await client.callTool({ name: "list_directory", arguments: { path: "/data/notes" } })), /mcp\.txt/);
  // The file is in the workspace itself.
  const cat = await call("GET", `/bots/${BOT}/container/fs/read?path=notes/mcp.txt`);
  assert.equal(cat.status, 200, cat.text);
  assert.match(cat.text, /written through the stdio proxy/);
  await client.close();
});

test("a server that crashes at start: the error names its exit code and its stderr, and no connection is left", async () => {
  const before = (await listConnections()).length;
  const r = await call("POST", `/bots/${BOT}/mcp-stdio`, {
    token: botToken,
    body: { name: "crasher", command: "node", args: ["-e", "console.error('fatal: config file /etc/crasher.toml is missing'); process.exit(3)"] },
  });
  assert.equal(r.status, 503, r.text);
  const error = r.json.error as { code: string; message: string; exit: { code: number; signal: string | null; stderr_tail: string[] } };
  assert.equal(error.code, "unavailable");
  assert.match(error.message, /"crasher" exited with code 3 before it answered initialize/);
  assert.match(error.message, /fatal: config file \/etc\/crasher\.toml is missing/);
  assert.deepEqual(error.exit, { code: 3, signal: null, stderr_tail: ["fatal: config file /etc/crasher.toml is missing"] });
  assert.equal((await listConnections()).length, before);
  // A command that is not there: the agent's reason.
  const missing = await call("POST", `/bots/${BOT}/mcp-stdio`, { token: botToken, body: { name: "missing", command: "no-such-server" } });
  assert.equal(missing.status, 404, missing.text);
  assert.match(missing.text, /no-such-server/);
});

test("a server that writes 8 MB to stderr before it answers still answers", async () => {
  const script = `process.stderr.write(("e".repeat(1023) + "\\n").repeat(8 * 1024), () => import(${JSON.stringify(EVERYTHING)}));\n`;
  const w = await call("POST", `/bots/${BOT}/container/fs/write`, { body: { path: "noisy.mjs", content: script } });
  assert.equal(w.status, 200, w.text);
  const started = await startServer({ name: "noisy", command: "node", args: ["/data/noisy.mjs", "stdio"], timeout_s: 60 });
  assert.ok(started.tools.some((t) => t.name === "echo"));
  const client = await connect(started.url);
  assert.equal(textOf(await client.callTool({ name: "echo", arguments: { message: "still here" } })), "Echo: still here");
  await client.close();
});

test("a server killed during a session: the next call's error names the signal and exit code; the connection is listed as ended", async () => {
  const started = await startServer({ name: "victim", command: "node", args: [EVERYTHING, "stdio"] });
  const client = await connect(started.url);
  await client.callTool({ name: "echo", arguments: { message: "alive" } });
  const slow = client.callTool({ name: "trigger-long-running-operation", arguments: { duration: 30, steps: 30 } }).then(
    () => "answered",
    (err: unknown) => String(err),
  );
  await waitFor("the long call to be in flight", async () => ((await listConnections()).find((c) => c.connection_id === started.connection_id)?.requests_in_flight === 1 ? true : undefined));
  const kill = await call("POST", `/bots/${BOT}/container/exec`, { body: { argv: ["kill", "-9", String(started.pid)] } });
  assert.equal(kill.json.exit_code, 0, kill.text);
  assert.match(await slow, /was killed by SIGKILL \(exit code 137\)/);
  const listed = await waitFor("the connection to be listed as ended", async () => {
    const c = (await listConnections()).find((x) => x.connection_id === started.connection_id);
    return c?.state === "ended" ? c : undefined;
  });
  assert.equal((listed.ended as { reason: string }).reason, "exited");
  assert.equal(((listed.ended as { exit: { code: number } }).exit).code, 137);
  await assert.rejects(client.callTool({ name: "echo", arguments: { message: "anyone?" } }), (err: Error & { code?: number }) => {
    assert.equal(err.code, 404, err.message);
    assert.match(err.message, /victim\\" was killed by SIGKILL \(exit code 137\)/);
    return true;
  });
});

test("auth: another bot's token is refused on the proxy routes and the endpoint (403); no token 401; the admin token reaches them", async () => {
  const started = await startServer({ name: "guarded", command: "node", args: [EVERYTHING, "stdio"] });
  const mcpPost = (token: string | undefined) =>
    request(started.url, {
      method: "POST",
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json", accept: "application/json, text/event-stream" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
    }).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
  for (const [what, r] of [
    ["start", await call("POST", `/bots/${BOT}/mcp-stdio`, { token: otherToken, body: { name: "x", command: "node" } })],
    ["list", await call("GET", `/bots/${BOT}/mcp-stdio`, { token: otherToken })],
    ["end", await call("DELETE", `/bots/${BOT}/mcp-stdio/${started.connection_id}`, { token: otherToken })],
    ["endpoint", await mcpPost(otherToken)],
  ] as const) {
    assert.equal(r.status, 403, `${what}: ${r.text}`);
    assert.match(r.text, /another bot/, what);
  }
  assert.equal((await mcpPost(undefined)).status, 401);
  // The other bot sees none of this bot's connections through its own routes either.
  assert.ok(!(await listConnections(OTHER, otherToken)).some((c) => c.connection_id === started.connection_id));
  const other = await call("GET", `/bots/${OTHER}/mcp-stdio/${started.connection_id}`, { token: otherToken });
  assert.equal(other.status, 404, other.text);
  // The admin token reaches every bot's proxies.
  const admin = await connect(started.url, s.adminToken);
  assert.equal(textOf(await admin.callTool({ name: "echo", arguments: { message: "admin" } })), "Echo: admin");
  await admin.close();
});

test("a foreign Origin is refused with 403 (and a foreign Host name); a loopback Origin passes", async () => {
  const started = await startServer({ name: "origin", command: "node", args: [EVERYTHING, "stdio"] });
  const post = (headers: Record<string, string>) =>
    request(started.url, {
      method: "POST",
      headers: { authorization: `Bearer ${botToken}`, "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
    }).then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
  const foreign = await post({ origin: "https://evil.example" });
  assert.equal(foreign.status, 403, foreign.text);
  assert.match(foreign.text, /origin https:\/\/evil\.example are not allowed/);
  assert.equal((JSON.parse(foreign.text) as { jsonrpc: string }).jsonrpc, "2.0");
  const rebound = await post({ host: `evil.example:${new URL(s.url).port}` });
  assert.equal(rebound.status, 403, rebound.text);
  assert.match(rebound.text, /host name evil\.example is not allowed/);
  const local = await post({ origin: "http://localhost:3000" });
  assert.equal(local.status, 200, local.text);
  assert.match(local.text, /mcp-servers\/everything/);
});

test("a body over 16 MiB is refused (413) before it is read whole; the connection goes on", async () => {
  const started = await startServer({ name: "bounded", command: "node", args: [EVERYTHING, "stdio"] });
  const client = await connect(started.url);
  // Over a raw socket: the server answers from Content-Length alone and closes; only the
  // start of the body is written, as writing the rest would race that close.
  const size = 16 * 1024 * 1024 + 1;
  const answer = await new Promise<string>((resolve) => {
    const url = new URL(started.url);
    const sock = net.connect(Number(url.port), url.hostname);
    let received = "";
    sock.on("data", (d: Buffer) => (received += d.toString()));
    sock.on("error", () => undefined);
    sock.on("close", () => resolve(received));
    sock.write(`POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${botToken}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`);
    sock.write(`{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"echo","arguments":{"message":"${"x".repeat(64 * 1024)}`);
  });
  assert.match(answer, /^HTTP\/1\.1 413 /, answer.slice(0, 300));
  assert.match(answer, /payload_too_large/);
  const big = "y".repeat(4 * 1024 * 1024);
  assert.equal(textOf(await client.callTool({ name: "echo", arguments: { message: big } })).length, `Echo: ${big}`.length);
  await client.close();
});

test("DELETE ends a connection and its server process; its endpoint then answers 404", async () => {
  const started = await startServer({ name: "doomed", command: "node", args: [EVERYTHING, "stdio"] });
  const client = await connect(started.url);
  await client.callTool({ name: "echo", arguments: { message: "before" } });
  assert.ok(await runsInWorkspace(BOT, started.pid));
  // A DELETE naming a session that is not the connection's ends nothing.
  const stale = await call("DELETE", `/bots/${BOT}/mcp-stdio/${started.connection_id}`, { token: botToken, headers: { "mcp-session-id": "an-old-session" } });
  assert.equal(stale.status, 404, stale.text);
  assert.ok(await runsInWorkspace(BOT, started.pid));
  const r = await call("DELETE", `/bots/${BOT}/mcp-stdio/${started.connection_id}`, { token: botToken });
  assert.equal(r.status, 200, r.text);
  const ended = r.json.ended as { state: string; ended: { reason: string } };
  assert.equal(ended.state, "ended");
  assert.equal(ended.ended.reason, "deleted");
  await waitFor("the server process to be gone", async () => ((await runsInWorkspace(BOT, started.pid)) ? undefined : true), 10_000);
  assert.ok(!(await listConnections()).some((c) => c.connection_id === started.connection_id));
  await assert.rejects(client.callTool({ name: "echo", arguments: { message: "after" } }), (err: Error & { code?: number }) => {
    assert.equal(err.code, 404, err.message);
    return true;
  });
  const again = await call("DELETE", `/bots/${BOT}/mcp-stdio/${started.connection_id}`, { token: botToken });
  assert.equal(again.status, 404, again.text);
});

test(`an idle connection is closed after MEMOH_MCP_STDIO_IDLE_S (${IDLE_S} s) and its server exits; it is listed as ended, idle`, async () => {
  const started = await startServer({ name: "idler", command: "node", args: [EVERYTHING, "stdio"] });
  const t0 = Date.now();
  const listed = await waitFor(
    "the idle connection to be closed",
    async () => {
      const c = (await listConnections()).find((x) => x.connection_id === started.connection_id);
      return c?.state === "ended" ? c : undefined;
    },
    (IDLE_S + 20) * 1000,
    200,
  );
  assert.ok(Date.now() - t0 >= (IDLE_S - 1) * 1000, "closed before it was idle for long");
  assert.equal((listed.ended as { reason: string }).reason, "idle");
  await waitFor("the idle server process to be gone", async () => ((await runsInWorkspace(BOT, started.pid)) ? undefined : true), 10_000);
});
