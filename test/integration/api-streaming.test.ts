// Big transfers through the real server process stay streamed: a 1 GiB upload and the
// same 1 GiB downloaded back keep the server's RSS growth under 100 MB, and the bytes
// arrive intact (sha256 on both sides).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { Readable } from "node:stream";
import { request } from "undici";
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
