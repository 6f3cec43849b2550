// Big transfers through the real server process stay streamed: a 1 GiB upload and the
// same 1 GiB downloaded back keep the server's RSS growth under 100 MB, and the bytes
// arrive intact (sha256 on both sides). A client that stops reading a command's output
// (NDJSON exec, the terminal) holds the command back instead of filling the server.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import type net from "node:net";
import { Readable } from "node:stream";
import { request } from "undici";
import WebSocket from "ws";
import { startServerEnv, type ServerEnv } from "./env/server.js";

let s: ServerEnv;
const GIB = 1024 * 1024 * 1024;
const MB = 1000 * 1000;

before(async () => {
  s = await startServerEnv();
});

after(async () => {
  await s?.close();
});

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m![1]) * 1024;
}

/** Samples the server's RSS every 100 ms while `work` runs; returns the peak growth over the start. */
async function peakGrowth(pid: number, work: () => Promise<void>): Promise<number> {
  const start = rssOf(pid);
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 100);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return Math.max(peak, rssOf(pid)) - start;
}

/** 1 GiB of a repeating, non-trivial pattern, produced as it is sent. */
function* pattern(total: number): Generator<Buffer> {
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 7 + (i >> 10)) & 0xff;
  for (let sent = 0; sent < total; sent += block.length) yield block.subarray(0, Math.min(block.length, total - sent));
}

test("a 1 GiB upload and download are streamed: server RSS grows by less than 100 MB, the bytes arrive intact", { timeout: 600_000 }, async () => {
  const auth = { authorization: `Bearer ${s.adminToken}` };
  const bot = "api-big";
  const created = await request(`${s.url}/bots/${bot}/container`, { method: "POST", headers: auth });
  assert.equal(created.statusCode, 200, await created.body.text());
  const pid = s.pid()!;
  // Warm up the routes once so that lazy compilation is not counted as growth.
  await request(`${s.url}/bots/${bot}/container/fs/list?path=/data`, { headers: auth }).then((r) => r.body.dump());

  const expected = createHash("sha256");
  for (const b of pattern(GIB)) expected.update(b);
  const digest = expected.digest("hex");

  const boundary = "memohbig";
  const body = Readable.from(
    (function* () {
      yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nbig.bin\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n`);
      yield* pattern(GIB);
      yield Buffer.from(`\r\n--${boundary}--\r\n`);
    })(),
  );
  let uploaded: { bytes: number; sha256: string } | undefined;
  const upGrowth = await peakGrowth(pid, async () => {
    const res = await request(`${s.url}/bots/${bot}/container/fs/upload`, { method: "POST", headers: { ...auth, "content-type": `multipart/form-data; boundary=${boundary}` }, body, bodyTimeout: 0, headersTimeout: 0 });
    const text = await res.body.text();
    assert.equal(res.statusCode, 200, text);
    uploaded = JSON.parse(text) as { bytes: number; sha256: string };
  });
  assert.deepEqual(uploaded, { path: "big.bin", bytes: GIB, sha256: digest });

  const got = createHash("sha256");
  let received = 0;
  const downGrowth = await peakGrowth(pid, async () => {
    const res = await request(`${s.url}/bots/${bot}/container/fs/download?path=big.bin`, { headers: auth, bodyTimeout: 0, headersTimeout: 0 });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers["content-length"], String(GIB));
    for await (const chunk of res.body) {
      got.update(chunk);
      received += chunk.length;
    }
  });
  assert.equal(received, GIB);
  assert.equal(got.digest("hex"), digest);
  console.log(`# server RSS growth: upload ${(upGrowth / MB).toFixed(1)} MB, download ${(downGrowth / MB).toFixed(1)} MB`);
  assert.ok(upGrowth < 100 * MB, `upload grew the server's RSS by ${(upGrowth / MB).toFixed(1)} MB`);
  assert.ok(downGrowth < 100 * MB, `download grew the server's RSS by ${(downGrowth / MB).toFixed(1)} MB`);
  await request(`${s.url}/bots/${bot}/container`, { method: "DELETE", headers: auth }).then((r) => r.body.dump());
});

/** What a command prints in the workspace of `bot` (asked through exec). */
async function run(bot: string, command: string): Promise<string> {
  const res = await request(`${s.url}/bots/${bot}/container/exec`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ command }),
  });
  const r = (await res.body.json()) as { stdout: string; exit_code: number };
  assert.equal(r.exit_code, 0);
  return r.stdout.trim();
}

const BLOCKS = 256;
const BLOCK = 1024 * 1024;
/** 256 MiB of letters, one MiB at a time, counting the blocks out in /data/progress. */
const PRODUCER = `i=0; while [ $i -lt ${BLOCKS} ]; do head -c ${BLOCK} /dev/zero | tr '\\0' a; i=$((i+1)); echo $i > /data/progress; done`;

/**
 * While its client reads nothing: how many MiB the producer got out before it stopped
 * moving (the same count over 2 s), or all of them. Bounded at 60 s.
 */
async function stallPoint(bot: string): Promise<number> {
  const read = async () => Number((await run(bot, "cat /data/progress 2>/dev/null || echo 0")) || 0);
  let last = -1;
  let same = 0;
  const deadline = Date.now() + 60_000;
  for (;;) {
    const now = await read();
    same = now === last ? same + 1 : 0;
    last = now;
    if (now >= BLOCKS || same >= 4 || Date.now() > deadline) return now;
    await new Promise((r) => setTimeout(r, 500));
  }
}

test("exec output streamed to a client that stops reading holds the command back, not the server's memory; reading again lets it finish", { timeout: 300_000 }, async () => {
  const auth = { authorization: `Bearer ${s.adminToken}` };
  const bot = "api-slow-exec";
  const created = await request(`${s.url}/bots/${bot}/container`, { method: "POST", headers: auth });
  assert.equal(created.statusCode, 200, await created.body.text());
  const res = await request(`${s.url}/bots/${bot}/container/exec`, {
    method: "POST",
    headers: { ...auth, accept: "application/x-ndjson", "content-type": "application/json" },
    body: JSON.stringify({ command: PRODUCER, timeout_s: 0 }),
    bodyTimeout: 0,
  });
  assert.equal(res.statusCode, 200);
  const held = await stallPoint(bot);
  console.log(`# exec, client not reading: the command stopped after ${held} of ${BLOCKS} MiB`);
  assert.ok(held < 64, `the command got ${held} MiB out to a client that read nothing: the server holds it`);
  let letters = 0;
  let exit: { code: number } | undefined;
  let buf = "";
  for await (const chunk of res.body) {
    buf += chunk.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = JSON.parse(buf.slice(0, i)) as { stdout?: string; exit?: { code: number } };
      buf = buf.slice(i + 1);
      if (line.stdout !== undefined) letters += line.stdout.length;
      if (line.exit !== undefined) exit = line.exit;
    }
  }
  assert.equal(letters, BLOCKS * BLOCK);
  assert.equal(exit?.code, 0);
  assert.equal(await run(bot, "cat /data/progress"), String(BLOCKS));
  await request(`${s.url}/bots/${bot}/container`, { method: "DELETE", headers: auth }).then((r) => r.body.dump());
});

test("terminal output to a WebSocket client that stops reading holds the shell back, not the server's memory; reading again lets it finish", { timeout: 300_000 }, async () => {
  const auth = { authorization: `Bearer ${s.adminToken}` };
  const bot = "api-slow-term";
  const created = await request(`${s.url}/bots/${bot}/container`, { method: "POST", headers: auth });
  assert.equal(created.statusCode, 200, await created.body.text());
  const ws = new WebSocket(`${s.url.replace("http", "ws")}/bots/${bot}/container/terminal?command=${encodeURIComponent(`${PRODUCER}; exit 3`)}`, ["memoh.terminal", `bearer.${s.adminToken}`]);
  let received = 0;
  ws.on("message", (d: Buffer) => (received += d.length));
  const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  // The client's socket stops reading: what the server sends piles up in front of it.
  const raw = (ws as unknown as { _socket: net.Socket })._socket;
  raw.pause();
  const held = await stallPoint(bot);
  console.log(`# terminal, client not reading: the shell stopped after ${held} of ${BLOCKS} MiB (${received} bytes read before the pause)`);
  assert.ok(held < 64, `the shell got ${held} MiB out to a client that read nothing: the server holds it`);
  raw.resume();
  assert.equal(await closed, 4003);
  assert.equal(received, BLOCKS * BLOCK);
  assert.equal(await run(bot, "cat /data/progress"), String(BLOCKS));
  await request(`${s.url}/bots/${bot}/container`, { method: "DELETE", headers: auth }).then((r) => r.body.dump());
});
