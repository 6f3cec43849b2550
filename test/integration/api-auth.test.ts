// Who may call what, against the real server process on PostgreSQL: every route family
// over HTTP, SSE and WebSocket with no token, a bad one, a revoked one, an expired one, a
// bot token on its own bot, on another bot and on an admin route, and the admin token.
// Also: the generated admin token is stored only as a hash, and survives a restart.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { request } from "undici";
import WebSocket from "ws";
import { startServerEnv, type ServerEnv } from "./env/server.js";
import { DATABASE_URL } from "./env/workspace.js";

let s: ServerEnv;
const OWN = "auth-own";
const OTHER = "auth-other";
let botToken: string;
let revokedToken: string;
let expiredToken: string;

before(async () => {
  s = await startServerEnv({ postgres: true });
  for (const bot of [OWN, OTHER]) {
    const r = await req("POST", `/bots/${bot}/container`, s.adminToken);
    assert.equal(r.status, 200, r.text);
  }
  botToken = (await createToken(OWN)).token;
  const revoked = await createToken(OWN);
  revokedToken = revoked.token;
  assert.equal((await req("DELETE", `/tokens/${revoked.id}`, s.adminToken)).status, 200);
  expiredToken = (await createToken(OWN, 1)).token;
  await sleep(1_100);
});

after(async () => {
  await s?.close();
});

async function req(method: string, route: string, token: string | undefined, opts: { body?: unknown; accept?: string } = {}) {
  const headers: Record<string, string> = { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(opts.accept ? { accept: opts.accept } : {}) };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await request(`${s.url}${route}`, { method: method as "GET", headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
  const text = await res.body.text();
  return { status: res.statusCode, text, json: (() => { try { return JSON.parse(text) as Record<string, unknown>; } catch { return {}; } })() };
}

async function createToken(bot: string, expiresInS?: number): Promise<{ token: string; id: string }> {
  const r = await req("POST", "/tokens", s.adminToken, { body: { bot_id: bot, name: "test", ...(expiresInS ? { expires_in_s: expiresInS } : {}) } });
  assert.equal(r.status, 200, r.text);
  return { token: r.json.token as string, id: (r.json.info as { id: string }).id };
}

function expectCode(r: { status: number; text: string; json: Record<string, unknown> }, status: number, code: string, what: string): void {
  assert.equal(r.status, status, `${what}: ${r.text}`);
  assert.equal((r.json.error as { code?: string } | undefined)?.code, code, `${what}: ${r.text}`);
}

/** One route of each family, on a given bot. */
const routes = (bot: string): Array<{ method: string; route: string; body?: unknown; accept?: string; family: string }> => [
  { family: "lifecycle", method: "GET", route: `/bots/${bot}/container` },
  { family: "sse", method: "POST", route: `/bots/${bot}/container`, body: {}, accept: "text/event-stream" },
  { family: "events", method: "GET", route: `/bots/${bot}/container/events` },
  { family: "files", method: "GET", route: `/bots/${bot}/container/fs/list?path=/data` },
  { family: "exec", method: "POST", route: `/bots/${bot}/container/exec`, body: { command: "true" } },
  { family: "skills", method: "GET", route: `/bots/${bot}/container/skills` },
];
const adminRoutes = [
  { method: "GET", route: "/bots" },
  { method: "GET", route: "/tokens" },
  { method: "POST", route: "/tokens", body: { bot_id: OWN } },
  { method: "GET", route: "/metrics" },
];

/**
 * A POST that announces a 20 MB body and sends only its first 64 KiB, over a raw socket:
 * the status line the server answers with, or "no answer" when it waited for the rest.
 */
function partialPost(route: string, authorization: string | undefined, waitMs: number): Promise<string> {
  return new Promise((resolve) => {
    const url = new URL(s.url);
    const sock = net.connect(Number(url.port), url.hostname);
    let received = "";
    const done = (answer: string) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done("no answer"), waitMs);
    sock.on("data", (d: Buffer) => {
      received += d.toString();
      const line = /^(HTTP\/1\.1 \d{3})/.exec(received);
      if (line) done(line[1]!);
    });
    sock.on("error", () => undefined);
    const size = 20 * 1000 * 1000;
    sock.write(`POST ${route} HTTP/1.1\r\nHost: ${url.host}\r\n${authorization ? `Authorization: ${authorization}\r\n` : ""}Content-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`);
    sock.write(`{"path":"x","content":"${"a".repeat(64 * 1024)}`);
  });
}

function wsStatus(bot: string, token: string | undefined, via: "header" | "protocol"): Promise<number | "open"> {
  return new Promise((resolve, reject) => {
    const protocols = ["memoh.terminal", ...(via === "protocol" && token ? [`bearer.${token}`] : [])];
    const ws = new WebSocket(`${s.url.replace("http", "ws")}/bots/${bot}/container/terminal`, protocols, {
      headers: via === "header" && token ? { authorization: `Bearer ${token}` } : {},
    });
    ws.on("unexpected-response", (_r, res) => resolve(res.statusCode ?? 0));
    ws.on("open", () => {
      ws.close();
      resolve("open");
    });
    ws.on("error", (err) => reject(err));
  });
}

test("no, bad, revoked and expired tokens get 401 on every family, HTTP, SSE and WebSocket; public routes need none", async () => {
  const bad = `mwt_${"a".repeat(12)}_${"b".repeat(43)}`;
  for (const [label, token] of [["no token", undefined], ["garbage", "nonsense"], ["unknown", bad], ["revoked", revokedToken], ["expired", expiredToken]] as const) {
    for (const r of [...routes(OWN), ...adminRoutes]) {
      expectCode(await req(r.method, r.route, token, { ...(r.body !== undefined ? { body: r.body } : {}), ...("accept" in r && r.accept ? { accept: r.accept } : {}) }), 401, "unauthenticated", `${label} ${r.method} ${r.route}`);
    }
    for (const via of ["header", "protocol"] as const) assert.equal(await wsStatus(OWN, token, via), 401, `${label} terminal via ${via}`);
  }
  const revoked = await req("GET", `/bots/${OWN}/container`, revokedToken);
  assert.match(revoked.text, /revoked/);
  assert.match((await req("GET", `/bots/${OWN}/container`, expiredToken)).text, /expired/);
  assert.equal((await req("GET", "/healthz", undefined)).status, 200);
  assert.equal((await req("GET", "/readyz", undefined)).status, 200);
});

test("a request without a valid token is refused before its body is read: 401 while a 20 MB body is still coming", async () => {
  const route = `/bots/${OWN}/container/fs/write`;
  assert.equal(await partialPost(route, undefined, 10_000), "HTTP/1.1 401");
  assert.equal(await partialPost(route, "Bearer nonsense", 10_000), "HTTP/1.1 401");
  assert.equal(await partialPost(`/bots/${OTHER}/container/fs/write`, `Bearer ${botToken}`, 10_000), "HTTP/1.1 403");
  const listed = await req("GET", `/bots/${OWN}/container/fs/list?path=/data`, s.adminToken);
  assert.deepEqual(listed.json.entries, [], "a refused write changed the workspace");
});

test("a bot token reaches its own bot on every family (HTTP, SSE, WebSocket), gets 403 on another bot's routes and on admin routes", async () => {
  for (const r of routes(OWN)) {
    const res = await req(r.method, r.route, botToken, { ...(r.body !== undefined ? { body: r.body } : {}), ...(r.accept ? { accept: r.accept } : {}) });
    assert.equal(res.status, 200, `${r.family} on its own bot: ${res.text}`);
  }
  for (const r of routes(OTHER)) {
    expectCode(await req(r.method, r.route, botToken, { ...(r.body !== undefined ? { body: r.body } : {}), ...(r.accept ? { accept: r.accept } : {}) }), 403, "permission_denied", `${r.family} on another bot`);
  }
  for (const r of adminRoutes) expectCode(await req(r.method, r.route, botToken, r.body !== undefined ? { body: r.body } : {}), 403, "permission_denied", `${r.method} ${r.route}`);
  // Limits and devices protect the host: a bot's own token cannot set or lift them.
  const before = await req("GET", `/bots/${OWN}/container`, s.adminToken);
  expectCode(await req("PATCH", `/bots/${OWN}/container`, botToken, { body: { limits: { memory_mb: 1024 * 1024 } } }), 403, "permission_denied", "PATCH limits with a bot token");
  expectCode(await req("POST", `/bots/${OWN}/container`, botToken, { body: { limits: { pids: 4_000_000 } } }), 403, "permission_denied", "create with limits with a bot token");
  expectCode(await req("POST", `/bots/${OWN}/container`, botToken, { body: { gpu: { devices: ["nvidia.com/gpu=all"] } } }), 403, "permission_denied", "create with devices with a bot token");
  assert.deepEqual((await req("GET", `/bots/${OWN}/container`, s.adminToken)).json.limits, before.json.limits, "a refused change moved the limits");
  const lifted = await req("PATCH", `/bots/${OWN}/container`, s.adminToken, { body: { limits: { pids: 2048 } } });
  assert.equal(lifted.status, 200, lifted.text);
  assert.equal((lifted.json.limits as { pids: number }).pids, 2048);
  for (const via of ["header", "protocol"] as const) {
    assert.equal(await wsStatus(OWN, botToken, via), "open", `terminal of its own bot via ${via}`);
    assert.equal(await wsStatus(OTHER, botToken, via), 403, `terminal of another bot via ${via}`);
  }
  // The other bot was not touched by any of it.
  const other = await req("GET", `/bots/${OTHER}/container/fs/list?path=/data`, s.adminToken);
  assert.deepEqual((other.json.entries as unknown[]).length, 0);
});

test("the admin token reaches everything; tokens are listed without secrets and stored only as hashes; the generated admin token survives a restart", async () => {
  for (const r of [...routes(OTHER), ...adminRoutes]) {
    const res = await req(r.method, r.route, s.adminToken, { ...(r.body !== undefined ? { body: r.body } : {}), ...("accept" in r && r.accept ? { accept: r.accept } : {}) });
    assert.equal(res.status, 200, `${r.method} ${r.route}: ${res.text}`);
  }
  const listed = await req("GET", "/tokens", s.adminToken);
  assert.doesNotMatch(listed.text, /mwt_/, "a secret is listed");
  assert.equal(fs.statSync(path.join(s.dataRoot, "admin-token")).mode & 0o777, 0o600);
  // At rest: hashes only.
  const schema = s.processEnv.MEMOH_DB_SCHEMA!;
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ secret_sha256: string }>(`SELECT secret_sha256 FROM ${schema}.api_tokens`);
    assert.ok(rows.length >= 4);
    for (const r of rows) assert.match(r.secret_sha256, /^[0-9a-f]{64}$/);
    const dump = JSON.stringify(rows);
    for (const secret of [s.adminToken, botToken]) assert.ok(!dump.includes(secret));
  } finally {
    await client.end();
  }
  await s.stopServer();
  await s.startServer();
  assert.equal(s.output().split("generated the admin token").length - 1, 1, "a second admin token was generated at the restart");
  assert.equal(s.output().split("serving on").length - 1, 2);
  assert.equal((await req("GET", "/bots", s.adminToken)).status, 200);
  assert.equal((await req("GET", `/bots/${OWN}/container`, botToken)).status, 200);
});

test("a configured MEMOH_ADMIN_TOKEN replaces the generated one: the generated token is revoked and its file removed; without it a new one is generated", async () => {
  const generated = s.adminToken;
  const configured = `configured-${"x".repeat(40)}`;
  const file = path.join(s.dataRoot, "admin-token");
  await s.stopServer();
  s.processEnv.MEMOH_ADMIN_TOKEN = configured;
  try {
    await s.startServer();
    assert.equal(fs.existsSync(file), false, "the generated token's file is still there");
    const old = await req("GET", "/bots", generated);
    expectCode(old, 401, "unauthenticated", "the generated token after a token was configured");
    assert.match(old.text, /revoked/);
    assert.equal((await req("GET", "/bots", configured)).status, 200);
    assert.equal((await req("GET", `/bots/${OWN}/container`, botToken)).status, 200, "bot tokens are not touched");
  } finally {
    await s.stopServer();
    delete s.processEnv.MEMOH_ADMIN_TOKEN;
  }
  await s.startServer();
  const renewed = fs.readFileSync(file, "utf8").trim();
  assert.notEqual(renewed, generated);
  assert.equal((await req("GET", "/bots", renewed)).status, 200);
  expectCode(await req("GET", "/bots", configured), 401, "unauthenticated", "the configured token once it is no longer configured");
  // The environment's own cleanup reads the file: it holds a live token again.
  s.adminToken = renewed;
});
