// The MCP tool gateway of the real server process (bin/memoh-workspace.mjs serve) at
// /bots/:bot_id/tools, against real workspaces: the SDK's 2025-line client and a
// 2026-07-28 client call every tool; bearer auth and Origin checks; skills as prompts
// and /data files as resources; all-or-nothing patches; tool metrics; the file and
// search tools in a workspace whose image has no shell and no libc; background jobs
// that outlive the orchestrator and die with their whole process group.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { Client as ModernClient, StreamableHTTPClientTransport as ModernTransport } from "@modelcontextprotocol/client";
import { Client as LegacyClient } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as LegacyTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { request } from "undici";
import { Validator } from "@seriousme/openapi-schema-validator";
import { buildLayer, buildOciImage, writeOciLayout } from "../../scripts/image-builder.js";
import { startServerEnv, type ServerEnv } from "./env/server.js";
import { waitFor } from "./env/workspace.js";

let s: ServerEnv;
const BOT = "mcpbot";
const OTHER = "mcpother";
const BARE = "mcpbare";
const LIMITED = "mcplimited";
const BARE_IMAGE = "memoh.test/no-shell:latest";
let botToken: string;
let otherToken: string;

async function api(method: string, route: string, body?: unknown, token = s.adminToken) {
  const res = await request(`${s.url}${route}`, {
    method: method as "GET",
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: (() => { try { return JSON.parse(text) as Record<string, unknown>; } catch { return {}; } })() };
}

async function createToken(bot: string): Promise<string> {
  const r = await api("POST", "/tokens", { bot_id: bot, name: "mcp test" });
  assert.equal(r.status, 200, r.text);
  return r.json.token as string;
}

before(async () => {
  s = await startServerEnv();
  // An image with two files and nothing else: no /bin/sh, no libc, no grep.
  const layer = await buildLayer([
    { path: "etc", type: "dir", mode: 0o755 },
    { path: "etc/motd", type: "file", mode: 0o644, data: Buffer.from("no shell here\n") },
    { path: "data", type: "dir", mode: 0o755 },
  ]);
  const tar = path.join(s.dataRoot, "no-shell.tar");
  await writeOciLayout([buildOciImage(BARE_IMAGE, [layer], { cmd: ["/nothing"] })], tar);
  await s.env.ctr(["images", "import", "--all-platforms", tar]);
  for (const [bot, image] of [[BOT, undefined], [OTHER, undefined], [BARE, BARE_IMAGE]] as const) {
    const r = await api("POST", `/bots/${bot}/container`, image !== undefined ? { image } : {});
    assert.equal(r.status, 200, r.text);
  }
  botToken = await createToken(BOT);
  otherToken = await createToken(OTHER);
});

after(async () => {
  await s?.close();
});

const gatewayUrl = (bot: string) => new URL(`${s.url}/bots/${bot}/tools`);

async function legacyClient(bot: string, token: string) {
  const client = new LegacyClient({ name: "legacy-it", version: "1" });
  const transport = new LegacyTransport(gatewayUrl(bot), { requestInit: { headers: { authorization: `Bearer ${token}` } } });
  await client.connect(transport);
  return { client, transport };
}

async function modernClient(bot: string, token: string) {
  const client = new ModernClient({ name: "modern-it", version: "1" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
  await client.connect(new ModernTransport(gatewayUrl(bot), { requestInit: { headers: { authorization: `Bearer ${token}` } } }));
  return client;
}

function text(r: object): string {
  const c = ((r as { content?: unknown }).content as Array<{ type: string; text?: string }>)[0]!;
  assert.equal(c.type, "text");
  return c.text!;
}

async function execIn(bot: string, argv: string[]) {
  const r = await api("POST", `/bots/${bot}/container/exec`, { argv });
  assert.equal(r.status, 200, r.text);
  return r.json as { stdout: string; stderr: string; exit_code: number };
}

const ALL_TOOLS = ["apply_patch", "edit", "exec", "get_background_status", "glob", "grep", "kill_background", "list", "list_background", "list_skills", "read", "use_skill", "wait_until", "write"];

const INIT = { jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "raw", version: "1" } } };

test("auth: no token is 401, another bot's token is 403, the bot's own token and the admin token get in", async () => {
  const post = (bot: string, headers: Record<string, string>) =>
    request(gatewayUrl(bot), { method: "POST", headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers }, body: JSON.stringify(INIT) });
  const none = await post(BOT, {});
  assert.equal(none.statusCode, 401);
  assert.match(await none.body.text(), /missing bearer token/);
  const foreign = await post(BOT, { authorization: `Bearer ${otherToken}` });
  assert.equal(foreign.statusCode, 403);
  assert.match(await foreign.body.text(), /another bot/);
  const bad = await post(BOT, { authorization: "Bearer mwt_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" });
  assert.equal(bad.statusCode, 401);
  await bad.body.dump();
  for (const token of [botToken, s.adminToken]) {
    const ok = await post(BOT, { authorization: `Bearer ${token}` });
    assert.equal(ok.statusCode, 200);
    const sid = ok.headers["mcp-session-id"];
    assert.equal(typeof sid, "string");
    await ok.body.dump();
    const del = await request(gatewayUrl(BOT), { method: "DELETE", headers: { authorization: `Bearer ${token}`, "mcp-session-id": String(sid), "mcp-protocol-version": "2025-11-25" } });
    assert.equal(del.statusCode, 200);
    await del.body.dump();
  }
  // A session opened with one bot's token is not reachable through another bot's gateway.
  const { transport } = await legacyClient(BOT, botToken);
  const cross = await request(gatewayUrl(OTHER), {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-session-id": transport.sessionId!, "mcp-protocol-version": "2025-11-25" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
  });
  assert.equal(cross.statusCode, 404);
  await cross.body.dump();
  await transport.terminateSession();
});

test("the gateway is in the OpenAPI document, which still validates as 3.1", async () => {
  const doc = await api("GET", "/openapi.json");
  const paths = doc.json.paths as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(paths["/bots/{bot_id}/tools"] ?? {}).sort(), ["delete", "get", "post"]);
  const verdict = await new Validator().validate(doc.json);
  assert.equal(verdict.valid, true, JSON.stringify(verdict).slice(0, 2000));
});

test("a foreign Origin is refused with 403 on both protocol lines", async () => {
  const headers = { authorization: `Bearer ${botToken}`, "content-type": "application/json", accept: "application/json, text/event-stream", origin: "https://evil.example" };
  const legacy = await request(gatewayUrl(BOT), { method: "POST", headers, body: JSON.stringify(INIT) });
  assert.equal(legacy.statusCode, 403);
  assert.match(await legacy.body.text(), /origin https:\/\/evil\.example are not allowed/);
  const discover = { jsonrpc: "2.0", id: 1, method: "server/discover", params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientInfo": { name: "x", version: "1" }, "io.modelcontextprotocol/clientCapabilities": {} } } };
  const modern = await request(gatewayUrl(BOT), { method: "POST", headers: { ...headers, "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover" }, body: JSON.stringify(discover) });
  assert.equal(modern.statusCode, 403);
  await modern.body.dump();
  const rebound = await request(gatewayUrl(BOT), { method: "POST", headers: { ...headers, origin: "http://127.0.0.1", host: "attacker.example" }, body: JSON.stringify(INIT) });
  assert.equal(rebound.statusCode, 403, "a rebound host name is refused");
  await rebound.body.dump();
});

test("a body that is not JSON gets a JSON-RPC parse error on both protocol lines, and the gateway serves on", async () => {
  const headers = { authorization: `Bearer ${botToken}`, "content-type": "application/json", accept: "application/json, text/event-stream" };
  for (const extra of [{}, { "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call" }]) {
    const res = await request(gatewayUrl(BOT), { method: "POST", headers: { ...headers, ...extra }, body: '{"jsonrpc":"2.0","id":1,"method":' });
    assert.equal(res.statusCode, 400, JSON.stringify(extra));
    const body = (await res.body.json()) as { error?: { code?: number; message?: string } };
    assert.equal(body.error?.code, -32700, JSON.stringify(body));
  }
  const client = await modernClient(BOT, botToken);
  assert.deepEqual((await client.listTools()).tools.map((t) => t.name).sort(), ALL_TOOLS);
  await client.close();
});

test("the 2025-line client calls every file tool in a real workspace", async () => {
  const { client, transport } = await legacyClient(BOT, botToken);
  assert.equal(transport.protocolVersion, "2025-11-25");
  const names = (await client.listTools()).tools.map((t) => t.name);
  assert.deepEqual(names.sort(), ALL_TOOLS);
  assert.equal(text(await client.callTool({ name: "write", arguments: { path: "proj/app.txt", content: "one\r\ntwo\r\nthree\r\n" } })), "Wrote 17 bytes to proj/app.txt (new file).");
  assert.equal(text(await client.callTool({ name: "read", arguments: { path: "/data/proj/app.txt", line_offset: 2 } })), "     2\ttwo\n     3\tthree\n[lines 2-3 of 3]");
  assert.equal(text(await client.callTool({ name: "edit", arguments: { path: "proj/app.txt", old_text: "two", new_text: "2" } })), "Replaced 1 occurrence in proj/app.txt.");
  assert.equal((await execIn(BOT, ["od", "-c", "/data/proj/app.txt"])).stdout.includes("\\r  \\n"), true, "CRLF kept");
  assert.match(text(await client.callTool({ name: "list", arguments: { path: "proj" } })), /^app\.txt \(15 bytes\)\n\[entries 1-1 of 1 in proj\]$/);
  const patch = "*** Begin Patch\n*** Update File: proj/app.txt\n one\n-2\n+two again\n*** Add File: proj/new.md\n+# new\n*** End Patch";
  assert.equal(text(await client.callTool({ name: "apply_patch", arguments: { patch } })), "Applied the patch:\nM proj/app.txt\nA proj/new.md");
  assert.equal((await execIn(BOT, ["cat", "/data/proj/app.txt", "/data/proj/new.md"])).stdout, "one\r\ntwo again\r\nthree\r\n# new\n");
  await client.ping();
  await transport.terminateSession();
});

test("apply_patch that fails while writing its third file undoes the first two", async () => {
  const client = await modernClient(BOT, botToken);
  await execIn(BOT, ["sh", "-c", "mkdir -p /data/atomic && printf 'a\\nb\\n' > /data/atomic/one.txt && printf 'x\\n' > /data/atomic/two.txt"]);
  // /opt/memoh is the read-only runtime bundle: the plan succeeds, the write fails.
  const patch = [
    "*** Begin Patch",
    "*** Update File: atomic/one.txt",
    " a",
    "-b",
    "+B",
    "*** Delete File: atomic/two.txt",
    "*** Add File: /opt/memoh/not-writable.txt",
    "+nope",
    "*** End Patch",
  ].join("\n");
  const r = await client.callTool({ name: "apply_patch", arguments: { patch } });
  assert.equal(r.isError, true);
  assert.match(text(r), /writing \/opt\/memoh\/not-writable\.txt failed .*the changes already made were undone, so nothing was changed/s);
  assert.equal((await execIn(BOT, ["cat", "/data/atomic/one.txt", "/data/atomic/two.txt"])).stdout, "a\nb\nx\n");
  await client.close();
});

test("skills are tools and prompts; /data files are resources (2026-07-28 client)", async () => {
  const skill = { name: "greeter", files: { "SKILL.md": "---\nname: greeter\ndescription: Greets people politely\n---\nSay hello with greet.sh.\n", "greet.sh": "echo hello\n" } };
  assert.equal((await api("POST", `/bots/${BOT}/container/skills`, { skills: [skill] }, botToken)).status, 200);
  const client = await modernClient(BOT, botToken);
  assert.equal(text(await client.callTool({ name: "list_skills", arguments: {} })), "1 skill:\n- greeter: Greets people politely");
  const used = text(await client.callTool({ name: "use_skill", arguments: { name: "greeter" } }));
  assert.match(used, /^---\nname: greeter\n[\s\S]*Say hello with greet\.sh\.\n[\s\S]*- \/data\/\.skills\/greeter\/SKILL\.md\n- \/data\/\.skills\/greeter\/greet\.sh\n$/);
  const missing = await client.callTool({ name: "use_skill", arguments: { name: "nope" } });
  assert.equal(missing.isError, true);
  assert.match(text(missing), /there is no skill "nope"; the skills are: greeter/);
  assert.deepEqual((await client.listPrompts()).prompts.map((p) => ({ name: p.name, description: p.description })), [{ name: "greeter", description: "Greets people politely" }]);
  const prompt = await client.getPrompt({ name: "greeter" });
  assert.match((prompt.messages[0]!.content as { text: string }).text, /Say hello with greet\.sh/);
  await execIn(BOT, ["sh", "-c", "echo 'resource body' > /data/res.txt"]);
  assert.ok((await client.listResources()).resources.some((r) => r.uri === "file:///data/res.txt"));
  assert.deepEqual((await client.readResource({ uri: "file:///data/res.txt" })).contents, [{ uri: "file:///data/res.txt", mimeType: "text/plain", text: "resource body\n" }]);
  await client.close();
});

test("tool-call latency and errors by tool are in /metrics", async () => {
  const client = await modernClient(BOT, botToken);
  await client.callTool({ name: "read", arguments: { path: "proj/app.txt" } });
  await client.callTool({ name: "read", arguments: { path: "does/not/exist" } });
  await client.close();
  const m = await api("GET", "/metrics");
  assert.match(m.text, /memoh_tool_call_duration_seconds_count\{tool="read",outcome="ok"\} [1-9]/);
  assert.match(m.text, /memoh_tool_call_duration_seconds_count\{tool="read",outcome="error"\} [1-9]/);
  assert.match(m.text, /memoh_tool_call_errors_total\{tool="read"\} [1-9]/);
  assert.match(m.text, /memoh_tool_call_duration_seconds_count\{tool="apply_patch",outcome="error"\} [1-9]/);
});

test("the file and search tools work in a workspace whose image has no shell and no libc", async () => {
  const noShell = await api("POST", `/bots/${BARE}/container/exec`, { command: "true" });
  assert.equal(noShell.status, 409, "the image really has no /bin/sh");
  assert.match(noShell.text, /this image has no shell/);
  const token = await createToken(BARE);
  for (const open of [async () => (await legacyClient(BARE, token)).client, async () => modernClient(BARE, token)]) {
    const client = await open();
    assert.equal(text(await client.callTool({ name: "read", arguments: { path: "/etc/motd" } })), "     1\tno shell here\n[lines 1-1 of 1]");
    assert.match(text(await client.callTool({ name: "write", arguments: { path: "notes/todo.txt", content: "buy milk\nwalk dog\n" } })), /^Wrote 18 bytes/);
    assert.equal(text(await client.callTool({ name: "edit", arguments: { path: "notes/todo.txt", old_text: "milk", new_text: "bread" } })), "Replaced 1 occurrence in notes/todo.txt.");
    const patch = "*** Begin Patch\n*** Update File: notes/todo.txt\n buy bread\n-walk dog\n+walk the dog\n*** Add File: notes/done.txt\n+nothing yet\n*** End Patch";
    assert.equal(text(await client.callTool({ name: "apply_patch", arguments: { patch } })), "Applied the patch:\nM notes/todo.txt\nA notes/done.txt");
    assert.equal(text(await client.callTool({ name: "read", arguments: { path: "notes/todo.txt" } })), "     1\tbuy bread\n     2\twalk the dog\n[lines 1-2 of 2]");
    assert.equal(text(await client.callTool({ name: "list", arguments: { path: "/data", recursive: true } })), "notes/\nnotes/done.txt (12 bytes)\nnotes/todo.txt (23 bytes)\n[lines 1-3 of 3 below /data (3 entries in all)]");
    assert.equal(text(await client.callTool({ name: "grep", arguments: { pattern: "walk", path: "notes" } })), "/data/notes/todo.txt:2: walk the dog\n[1 matching line in 1 file; 2 files searched]");
    assert.equal(text(await client.callTool({ name: "grep", arguments: { pattern: "shell", path: "/etc/motd" } })), "/etc/motd:1: no shell here\n[1 matching line in 1 file; 1 file searched]");
    assert.equal(text(await client.callTool({ name: "glob", arguments: { pattern: "**/*.txt" } })), "notes/done.txt\nnotes/todo.txt\n[2 paths matching **/*.txt under /data]");
    const exec = await client.callTool({ name: "exec", arguments: { command: "true" } });
    assert.equal(exec.isError, true);
    assert.match(text(exec), /has no shell \(\/bin\/sh\), so exec cannot run commands in it; use the file tools/);
    const cleanup = "*** Begin Patch\n*** Delete File: notes/todo.txt\n*** Delete File: notes/done.txt\n*** End Patch";
    assert.equal(text(await client.callTool({ name: "apply_patch", arguments: { patch: cleanup } })), "Applied the patch:\nD notes/todo.txt\nD notes/done.txt");
    await client.close();
  }
});

test("exec in a real workspace: output and exit code", async () => {
  const client = await modernClient(BOT, botToken);
  const r = text(await client.callTool({ name: "exec", arguments: { command: "echo hi from $(pwd); echo oops >&2; exit 2" } }));
  assert.match(r, /^\[exit code 2, \d+\.\d s\]\n--- stdout \(14 bytes, 1 lines\) ---\nhi from \/data\n--- stderr \(5 bytes, 1 lines\) ---\noops\n$/);
  await client.close();
});

/** Calls a tool with either client line and returns its text; asserts it is not an error. */
type Call = (name: string, args: Record<string, unknown>) => Promise<{ text: string; isError: boolean }>;

async function callerFor(line: "2025" | "2026-07-28", bot = BOT, token = botToken): Promise<{ call: Call; list: () => Promise<string[]>; close: () => Promise<void> }> {
  if (line === "2025") {
    const { client, transport } = await legacyClient(bot, token);
    return {
      call: async (name, args) => {
        const r = await client.callTool({ name, arguments: args });
        return { text: text(r), isError: r.isError === true };
      },
      list: async () => (await client.listTools()).tools.map((t) => t.name),
      close: () => transport.terminateSession(),
    };
  }
  const client = await modernClient(bot, token);
  return {
    call: async (name, args) => {
      const r = await client.callTool({ name, arguments: args });
      return { text: text(r), isError: r.isError === true };
    },
    list: async () => (await client.listTools()).tools.map((t) => t.name),
    close: () => client.close(),
  };
}

const jobIdOf = (t: string) => /job-[0-9a-f]{12}/.exec(t)![0];

for (const line of ["2025", "2026-07-28"] as const) {
  test(`the ${line} client calls the job and search tools: a timed-out exec continues in the background and wait_until awaits it`, async () => {
    const c = await callerFor(line);
    assert.deepEqual((await c.list()).sort(), ALL_TOOLS);
    const ok = async (name: string, args: Record<string, unknown>) => {
      const r = await c.call(name, args);
      assert.equal(r.isError, false, `${name}: ${r.text}`);
      return r.text;
    };
    const dir = `/data/search-${line}`;
    await ok("write", { path: `${dir}/src/main.py`, content: "def main():\n    print('hello')\n" });
    await ok("write", { path: `${dir}/src/util/helpers.py`, content: "def helper():\n    return 'HELLO'\n" });
    await execIn(BOT, ["sh", "-c", `mkdir -p ${dir}/.git && echo hello > ${dir}/.git/config && printf 'hello\\000' > ${dir}/blob.bin`]);
    assert.equal(await ok("grep", { pattern: "hello", path: dir, ignore_case: true }), `${dir}/src/main.py:2:     print('hello')\n${dir}/src/util/helpers.py:2:     return 'HELLO'\n[2 matching lines in 2 files; 2 files searched; 1 binary skipped]`);
    assert.equal(await ok("grep", { pattern: "^def \\w+", path: dir, glob: "helpers.*" }), `${dir}/src/util/helpers.py:1: def helper():\n[1 matching line in 1 file; 1 file searched]`);
    assert.equal(await ok("glob", { pattern: "**/*.py", path: dir }), `src/main.py\nsrc/util/helpers.py\n[2 paths matching **/*.py under ${dir}]`);
    // The file tools and the skills (installed by the skills test above) on this line too.
    assert.equal(await ok("read", { path: `${dir}/src/main.py`, line_offset: 2 }), "     2\t    print('hello')\n[lines 2-2 of 2]");
    assert.equal(await ok("edit", { path: `${dir}/src/main.py`, old_text: "'hello'", new_text: "'hello, world'" }), `Replaced 1 occurrence in ${dir}/src/main.py.`);
    assert.equal(await ok("apply_patch", { patch: `*** Begin Patch\n*** Add File: ${dir}/notes.txt\n+note\n*** End Patch` }), `Applied the patch:\nA ${dir}/notes.txt`);
    assert.match(await ok("list", { path: dir }), /^\.git\/\nblob\.bin \(6 bytes\)\nnotes\.txt \(5 bytes\)\nsrc\/\n/);
    assert.match(await ok("list_skills", {}), /- greeter: Greets people politely/);
    assert.match(await ok("use_skill", { name: "greeter" }), /Say hello with greet\.sh/);
    const badRe = await c.call("grep", { pattern: "[unclosed", path: dir });
    assert.equal(badRe.isError, true);
    assert.match(badRe.text, /pattern is not a valid regular expression/);

    const moved = await ok("exec", { command: "echo started; sleep 3; echo finished", timeout: 1 });
    assert.match(moved, /^\[still running after 1 s: moved to the background as job job-[0-9a-f]{12} \(pid \d+\); wait_until/);
    assert.match(moved, /--- stdout so far \(8 bytes, 1 lines\) ---\nstarted\n/);
    const id = jobIdOf(moved);
    assert.match(await ok("list_background", {}), new RegExp(`${id}  running`));
    assert.match(await ok("get_background_status", { task_id: id }), new RegExp(`^${id}  running .*\\n--- stdout \\(8 bytes\\) ---\\nstarted\\n`));
    const waited = await ok("wait_until", { task_id: id, timeout: 30, idle_timeout: 0 });
    assert.match(waited, new RegExp(`^\\[completed: the job completed\\]\\n${id}  completed \\(exit code 0\\)`));
    assert.match(waited, /--- stdout \(17 bytes\) ---\nstarted\nfinished\n/);

    const bg = await ok("exec", { command: "sleep 600", run_in_background: true });
    const bgId = jobIdOf(bg);
    assert.match(await ok("wait_until", { task_id: bgId, timeout: 1 }), /^\[timeout: the job is still running at the timeout\]/);
    assert.match(await ok("kill_background", { task_id: bgId }), new RegExp(`^Killed job ${bgId} and its process group: ${bgId}  killed \\(SIGKILL, exit code 137\\)`));
    assert.match(await ok("wait_until", { task_id: bgId }), /^\[killed: the job was killed\]/);
    const bad = await c.call("wait_until", { task_id: "not-a-job" });
    assert.equal(bad.isError, true);
    assert.match(bad.text, /task_id is a job id such as job-0123456789ab/);
    const gone = await c.call("get_background_status", { task_id: "job-000000000000" });
    assert.equal(gone.isError, true);
    assert.match(gone.text, /there is no background job job-000000000000 in this workspace/);
    await c.close();
  });
}

test("a background job outlives a restart of the orchestrator: still listed with its output, then awaited; the job limit is configurable", async () => {
  let c = await callerFor("2026-07-28");
  // The job runs until the test lets it end (a file appears), however long the restart takes.
  const command = "echo before restart; while [ ! -e /data/restart-go ]; do sleep 0.2; done; echo after restart";
  const started = await c.call("exec", { command, run_in_background: true });
  assert.equal(started.isError, false, started.text);
  const id = jobIdOf(started.text);
  await waitFor("the job's first line", async () => ((await c.call("get_background_status", { task_id: id })).text.includes("before restart") ? true : undefined));
  await c.close();
  const oldPid = s.pid();
  await s.stopServer();
  // The restarted server gives the workspaces it creates from now on a 2 s job limit.
  s.processEnv.MEMOH_JOB_MAX_RUNTIME_S = "2";
  await s.startServer();
  assert.notEqual(s.pid(), oldPid, "a new server process");
  c = await callerFor("2025");
  const listed = await c.call("list_background", {});
  assert.match(listed.text, new RegExp(`${id}  running .* echo before restart; while`));
  assert.match((await c.call("get_background_status", { task_id: id })).text, /--- stdout \(15 bytes\) ---\nbefore restart\n/);
  await execIn(BOT, ["touch", "/data/restart-go"]);
  const waited = await c.call("wait_until", { task_id: id, timeout: 60, idle_timeout: 0 });
  assert.match(waited.text, /^\[completed: the job completed\]/);
  assert.match(waited.text, /\nbefore restart\nafter restart\n/);
  await c.close();

  // MEMOH_JOB_MAX_RUNTIME_S reached the agent of a workspace created after the restart.
  assert.equal((await api("POST", `/bots/${LIMITED}/container`, {})).status, 200);
  const limited = await callerFor("2026-07-28", LIMITED, s.adminToken);
  const long = await limited.call("exec", { command: "sleep 60", run_in_background: true });
  const killed = await limited.call("wait_until", { task_id: jobIdOf(long.text), timeout: 30, idle_timeout: 0 });
  assert.match(killed.text, /^\[killed: the job was killed\]\njob-[0-9a-f]{12}  killed \(SIGKILL, exit code 137\) after its limit of 2\.0 s/);
  await limited.close();
});

test("kill_background kills the job's whole process group: a child it forked is gone too", async () => {
  const c = await callerFor("2026-07-28");
  const pidFile = "/data/bg-child.pid";
  const started = await c.call("exec", { command: `sleep 600 & echo $! > ${pidFile}; wait`, run_in_background: true });
  const id = jobIdOf(started.text);
  const child = await waitFor("the forked child's pid file", async () => {
    const r = await api("POST", `/bots/${BOT}/container/exec`, { argv: ["cat", pidFile] });
    return r.status === 200 && (r.json.exit_code as number) === 0 && /^\d+\n$/.test(r.json.stdout as string) ? Number(r.json.stdout) : undefined;
  });
  assert.equal((await execIn(BOT, ["kill", "-0", String(child)])).exit_code, 0, "the forked sleep runs");
  const killed = await c.call("kill_background", { task_id: id });
  assert.match(killed.text, /^Killed job .* killed \(SIGKILL, exit code 137\)/);
  await waitFor("the forked child to be gone", async () => ((await execIn(BOT, ["kill", "-0", String(child)])).exit_code !== 0 ? true : undefined));
  await c.close();
});

for (const line of ["2025", "2026-07-28"] as const) {
  test(`a cancelled long exec (${line} client) kills the command's process group in the workspace`, async () => {
    const pidFile = `/data/cancel-${line}.pid`;
    const command = `sleep 600 & echo $! > ${pidFile}; wait`;
    const controller = new AbortController();
    let call: Promise<unknown>;
    let close: () => Promise<void>;
    if (line === "2025") {
      const { client, transport } = await legacyClient(BOT, botToken);
      call = client.callTool({ name: "exec", arguments: { command, timeout: 600 } }, undefined, { signal: controller.signal });
      close = () => transport.terminateSession();
    } else {
      const client = await modernClient(BOT, botToken);
      call = client.callTool({ name: "exec", arguments: { command, timeout: 600 } }, { signal: controller.signal });
      close = () => client.close();
    }
    call.catch(() => undefined);
    const pid = await waitFor("the command's pid file", async () => {
      const r = await api("POST", `/bots/${BOT}/container/exec`, { argv: ["cat", pidFile] });
      return r.status === 200 && (r.json.exit_code as number) === 0 && /^\d+\n$/.test(r.json.stdout as string) ? Number(r.json.stdout) : undefined;
    });
    assert.equal((await execIn(BOT, ["kill", "-0", String(pid)])).exit_code, 0, "the background sleep runs");
    controller.abort();
    await assert.rejects(call);
    await waitFor("the background sleep to be killed", async () => ((await execIn(BOT, ["kill", "-0", String(pid)])).exit_code !== 0 ? true : undefined));
    await close();
  });
}
