// The HTTP API of the real server process (bin/memoh-workspace.mjs serve) over real
// HTTP on 127.0.0.1, against a private containerd, real CNI, a local registry and the
// embedded PGlite: every route family with success and error, the SSE create stream,
// a client that goes away mid-create, the terminal, and abuse that must change nothing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import { request } from "undici";
import WebSocket from "ws";
import { Validator } from "@seriousme/openapi-schema-validator";
import { buildTestImages } from "./env/images.js";
import { startRegistry, type RegistryEnv } from "./env/registry.js";
import { startServerEnv, type ServerEnv } from "./env/server.js";
import { waitFor } from "./env/workspace.js";

let s: ServerEnv;
let registry: RegistryEnv;
let pushed: { glibc: string; busybox: string };

before(async () => {
  [s, registry] = await Promise.all([startServerEnv(), startRegistry()]);
  const images = await buildTestImages();
  pushed = { glibc: await registry.push(images.glibc.image, "memoh/glibc"), busybox: await registry.push(images.busybox.image, "memoh/busybox") };
});

after(async () => {
  await s?.close();
  await registry?.stop();
});

type Json = Record<string, unknown>;

async function call(method: string, route: string, opts: { body?: unknown; token?: string | null; headers?: Record<string, string>; raw?: string | Buffer } = {}) {
  const token = opts.token === undefined ? s.adminToken : opts.token;
  const headers: Record<string, string> = { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...opts.headers };
  let body: string | Buffer | undefined = opts.raw;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers["content-type"] = "application/json";
  }
  const res = await request(`${s.url}${route}`, { method: method as "GET", headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.body.text();
  let json: Json = {};
  try {
    json = JSON.parse(text) as Json;
  } catch {
    // not JSON
  }
  return { status: res.statusCode, json, text, headers: res.headers };
}

function assertError(r: { status: number; json: Json; text: string }, status: number, code: string, message?: RegExp): void {
  assert.equal(r.status, status, r.text);
  const e = r.json.error as { code?: string; message?: string } | undefined;
  assert.equal(e?.code, code, r.text);
  assert.ok(typeof e?.message === "string" && e.message.length > 0, r.text);
  assert.doesNotMatch(r.text, /at .*\.ts:\d+|node_modules/, "a stack trace reached the client");
  if (message) assert.match(e!.message!, message);
}

/**
 * A POST announcing a body that is too large, over a raw socket: the server answers 413
 * from the Content-Length alone, before the client could have written it all.
 */
function oversized(route: string, body: string): Promise<{ status: number; json: Json; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(s.url);
    const sock = net.connect(Number(url.port), url.hostname);
    let received = "";
    sock.on("data", (d: Buffer) => (received += d.toString()));
    sock.on("error", () => undefined);
    sock.on("close", () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(received);
      if (!m) return reject(new Error(`no HTTP answer: ${received.slice(0, 200)}`));
      const text = received.slice(received.indexOf("\r\n\r\n") + 4);
      const json = (() => {
        try {
          return JSON.parse(text) as Json;
        } catch {
          return {};
        }
      })();
      resolve({ status: Number(m[1]), json, text });
    });
    sock.write(`POST ${route} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${s.adminToken}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`);
    // Only the start of the body: the server decides from Content-Length, answers and closes;
    // writing the rest would race its close (an RST can discard the answer).
    sock.write(body.slice(0, 64 * 1024));
  });
}

async function sseCreate(bot: string, body: unknown, opts: { abortAfter?: string } = {}) {
  const controller = new AbortController();
  const res = await request(`${s.url}/bots/${bot}/container`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, accept: "text/event-stream", "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers["content-type"]), /text\/event-stream/);
  const events: Array<{ event: string; data: Json; at: number }> = [];
  let buf = "";
  try {
    for await (const chunk of res.body) {
      buf += chunk.toString();
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const event = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) as Json, at: Date.now() });
        if (event === opts.abortAfter) {
          controller.abort();
          return events;
        }
      }
    }
  } catch (err) {
    if (!controller.signal.aborted) throw err;
  }
  return events;
}

test("operations: healthz and readyz without a token; metrics and the OpenAPI document need one; the document lists every route", async () => {
  assert.deepEqual((await call("GET", "/healthz", { token: null })).json, { status: "ok" });
  assert.deepEqual((await call("GET", "/readyz", { token: null })).json, { status: "ready" });
  assertError(await call("GET", "/metrics", { token: null }), 401, "unauthenticated");
  const metrics = await call("GET", "/metrics");
  assert.equal(metrics.status, 200);
  assert.match(metrics.text, /memoh_http_request_duration_seconds_bucket/);
  const doc = await call("GET", "/openapi.json");
  assert.equal(doc.status, 200);
  assert.equal(doc.json.openapi, "3.1.0");
  const validator = new Validator();
  const verdict = await validator.validate(doc.json);
  assert.equal(verdict.valid, true, JSON.stringify(verdict).slice(0, 3000));
  assert.equal(validator.version, "3.1");
  const paths = Object.keys(doc.json.paths as Json);
  for (const p of ["/healthz", "/readyz", "/metrics", "/bots", "/tokens", "/tokens/{id}", "/bots/{bot_id}/container", "/bots/{bot_id}/container/start", "/bots/{bot_id}/container/stop", "/bots/{bot_id}/container/events", "/bots/{bot_id}/container/fs", "/bots/{bot_id}/container/fs/list", "/bots/{bot_id}/container/fs/read", "/bots/{bot_id}/container/fs/download", "/bots/{bot_id}/container/fs/write", "/bots/{bot_id}/container/fs/upload", "/bots/{bot_id}/container/fs/mkdir", "/bots/{bot_id}/container/fs/delete", "/bots/{bot_id}/container/fs/rename", "/bots/{bot_id}/container/exec", "/bots/{bot_id}/container/terminal", "/bots/{bot_id}/container/skills"]) {
    assert.ok(paths.includes(p), `${p} missing from the OpenAPI document`);
  }
});

test("create streams pulling, growing pull progress, creating, starting, complete; the workspace is then served; stop, start, limits, events, list, delete", async () => {
  const bot = "api-life";
  const events = await sseCreate(bot, { image: pushed.glibc, limits: { memory_mb: 512, cpus: 1, pids: 512 } });
  const names = events.map((e) => e.event);
  assert.equal(names[0], "pulling", names.join(","));
  assert.equal((events[0]!.data as { image: string }).image, pushed.glibc);
  const progress = events.filter((e) => e.event === "pull_progress");
  assert.ok(progress.length >= 1, names.join(","));
  const offsets = progress.map((e) => e.data.offset as number);
  for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i]! >= offsets[i - 1]!, `offsets shrink: ${offsets.join(",")}`);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.at - progress[i - 1]!.at >= 200 || i === progress.length - 1, "progress sent more often than every 250 ms");
  const last = progress.at(-1)!.data as { offset: number; total: number; layers: Array<{ ref: string }> };
  assert.equal(last.offset, last.total);
  assert.ok(last.layers[0]!.ref.startsWith("sha256:"));
  assert.deepEqual(names.slice(-3), ["creating", "starting", "complete"]);
  const done = events.at(-1)!.data.container as Json;
  assert.equal(done.status, "running");
  assert.equal(done.started, true);

  const st = await call("GET", `/bots/${bot}/container`);
  assert.equal(st.status, 200);
  assert.equal(st.json.image, pushed.glibc);
  assert.deepEqual(st.json.limits, { memory_mb: 512, cpus: 1, pids: 512 });
  assert.equal((st.json.usage as Json).memory_limit_bytes, 512 * 1024 * 1024);

  // Asking again: the same workspace, not started again; another image is a conflict.
  const again = await call("POST", `/bots/${bot}/container`, { body: { image: pushed.glibc } });
  assert.deepEqual({ status: again.status, started: again.json.started }, { status: 200, started: false });
  assertError(await call("POST", `/bots/${bot}/container`, { body: { image: pushed.busybox } }), 409, "conflict", /image/);
  assertError(await call("POST", `/bots/${bot}/container`, { body: { snapshotter: "zfs" } }), 400, "invalid_argument", /snapshotter/);

  const patched = await call("PATCH", `/bots/${bot}/container`, { body: { limits: { memory_mb: 384, pids: 300 } } });
  assert.equal(patched.status, 200, patched.text);
  assert.equal(patched.json.pid, st.json.pid, "a live limit change restarted the workspace");
  assert.deepEqual(patched.json.limits, { memory_mb: 384, cpus: 1, pids: 300 });

  const stopped = await call("POST", `/bots/${bot}/container/stop`, { body: { timeout_s: 1 } });
  assert.deepEqual({ status: stopped.json.status, task: stopped.json.task }, { status: "stopped", task: "none" });
  assertError(await call("POST", `/bots/${bot}/container/exec`, { body: { command: "true" } }), 409, "conflict", /stopped/);
  const started = await call("POST", `/bots/${bot}/container/start`);
  assert.equal(started.json.task, "running");
  assert.equal((await call("POST", `/bots/${bot}/container/exec`, { body: { argv: ["true"] } })).json.exit_code, 0);

  const list = await call("GET", "/bots?status=running");
  assert.ok((list.json.workspaces as Json[]).some((w) => w.bot_id === bot));
  assert.equal((await call("GET", "/bots?status=stopped")).json.workspaces instanceof Array, true);
  assert.ok(!((await call("GET", "/bots?status=stopped")).json.workspaces as Json[]).some((w) => w.bot_id === bot));
  assertError(await call("GET", "/bots?status=sleeping"), 400, "invalid_argument");

  const ev = await call("GET", `/bots/${bot}/container/events?limit=50`);
  const types = (ev.json.events as Json[]).map((e) => e.type);
  for (const t of ["created", "started", "stopped", "limits_changed"]) assert.ok(types.includes(t), `${t} not in ${types.join(",")}`);
  assert.equal(((await call("GET", `/bots/${bot}/container/events?limit=2`)).json.events as Json[]).length, 2);

  // Metrics saw all of it: the pull's bytes, the bridge calls, the running workspace, the routes.
  const metrics = (await call("GET", "/metrics")).text;
  const pulledBytes = Number(/^memoh_image_bytes_pulled_total (\d+)/m.exec(metrics)?.[1] ?? 0);
  assert.ok(pulledBytes >= last.total, `bytes pulled ${pulledBytes} < ${last.total}`);
  assert.match(metrics, /^memoh_workspaces\{status="running"\} [1-9]/m);
  assert.match(metrics, /^memoh_bridge_call_duration_seconds_count\{rpc="exec",outcome="ok"\} [1-9]/m);
  assert.match(metrics, /memoh_http_request_duration_seconds_count\{method="PATCH",route="\/bots\/:bot_id\/container",status="200"\} 1/);

  assert.deepEqual((await call("DELETE", `/bots/${bot}/container`)).json, { deleted: true });
  assertError(await call("GET", `/bots/${bot}/container`), 404, "not_found");
  assertError(await call("DELETE", `/bots/${bot}/container`), 404, "not_found");
});

test("a client that disconnects during a create does not cancel it: the workspace finishes and is recorded", async () => {
  const bot = "api-gone";
  const images = await buildTestImages();
  const ref = await registry.push(images.glibc.image, "memoh/glibc", "gone");
  const seen = await sseCreate(bot, { image: ref }, { abortAfter: "pulling" });
  assert.deepEqual(seen.map((e) => e.event), ["pulling"]);
  const st = await waitFor("the create to finish", async () => {
    const r = await call("GET", `/bots/${bot}/container`);
    return r.status === 200 && r.json.status === "running" && r.json.task === "running" ? r.json : undefined;
  }, 60_000, 200);
  assert.equal(st.image, ref);
  const ex = await call("POST", `/bots/${bot}/container/exec`, { body: { argv: ["echo", "after"] } });
  assert.equal(ex.json.stdout, "after\n");
  await call("DELETE", `/bots/${bot}/container`);
});

test("files: write, stat, list, read a window, download with ETag and Range (206/416), upload streamed, mkdir, rename, delete; errors are clear", async () => {
  const bot = "api-files";
  assert.equal((await call("POST", `/bots/${bot}/container`)).status, 200);
  const base = `/bots/${bot}/container/fs`;
  assert.deepEqual((await call("POST", `${base}/write`, { body: { path: "docs/a.txt", content: "one\ntwo\nthree\n" } })).json, { path: "docs/a.txt", bytes: 14 });
  const bin = Buffer.from([0, 1, 2, 255, 254, 10]);
  assert.equal((await call("POST", `${base}/write`, { body: { path: "docs/b.bin", content: bin.toString("base64"), encoding: "base64" } })).json.bytes, 6);
  const stat = await call("GET", `${base}?path=docs/a.txt`);
  assert.deepEqual({ type: stat.json.type, size: stat.json.size, name: stat.json.name }, { type: "file", size: 14, name: "a.txt" });
  const list = await call("GET", `${base}/list?path=docs`);
  assert.deepEqual((list.json.entries as Json[]).map((e) => e.name), ["a.txt", "b.bin"]);
  const read = await call("GET", `${base}/read?path=docs/a.txt&offset=1&limit=1`);
  assert.deepEqual({ content: read.json.content, total: read.json.total_lines, binary: read.json.binary }, { content: "two\n", total: 3, binary: false });
  assert.equal((await call("GET", `${base}/read?path=docs/b.bin`)).json.binary, true);
  const whole = await call("GET", `${base}/read?path=docs/a.txt`);
  assert.deepEqual(whole.json, { content: "one\ntwo\nthree\n", total_lines: 3, line_offset: 0, line_count: 3, truncated: false, binary: false, size: 14 });
  assert.match(String(whole.headers["content-type"]), /^application\/json/);
  assertError(await call("GET", `${base}/read?path=docs/missing.txt`), 404, "not_found", /missing\.txt/);

  const dl = await call("GET", `${base}/download?path=docs/a.txt`);
  assert.equal(dl.status, 200);
  assert.equal(dl.text, "one\ntwo\nthree\n");
  assert.equal(dl.headers["content-length"], "14");
  const etag = String(dl.headers.etag);
  assert.equal((await call("GET", `${base}/download?path=docs/a.txt`, { headers: { "if-none-match": etag } })).status, 304);
  const part = await call("GET", `${base}/download?path=docs/a.txt`, { headers: { range: "bytes=4-6" } });
  assert.deepEqual({ status: part.status, text: part.text, range: part.headers["content-range"] }, { status: 206, text: "two", range: "bytes 4-6/14" });
  const tail = await call("GET", `${base}/download?path=docs/a.txt`, { headers: { range: "bytes=-6" } });
  assert.equal(tail.text, "three\n");
  const past = await call("GET", `${base}/download?path=docs/a.txt`, { headers: { range: "bytes=14-20" } });
  assert.equal(past.status, 416);
  assert.equal(past.headers["content-range"], "bytes */14");
  // A suffix range of an empty file names no byte: 416, not a 206 with "bytes 0--1/0".
  assert.equal((await call("POST", `${base}/write`, { body: { path: "docs/empty", content: "" } })).status, 200);
  const none = await call("GET", `${base}/download?path=docs/empty`, { headers: { range: "bytes=-10" } });
  assert.deepEqual({ status: none.status, range: none.headers["content-range"] }, { status: 416, range: "bytes */0" });
  // HEAD: the download's headers, no body.
  const head = await request(`${s.url}${base}/download?path=docs/a.txt`, { method: "HEAD", headers: { authorization: `Bearer ${s.adminToken}` } });
  assert.deepEqual({ status: head.statusCode, length: head.headers["content-length"], etag: head.headers.etag, body: await head.body.text() }, { status: 200, length: "14", etag, body: "" });
  assertError(await call("GET", `${base}/download?path=docs`), 400, "invalid_argument", /directory/);

  // Upload: multipart with the path field first; sha256 checked on the way.
  const payload = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
  const boundary = "memohtestboundary";
  const multipart = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nup/big.bin\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    payload,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const up = await call("POST", `${base}/upload`, { raw: multipart, headers: { "content-type": `multipart/form-data; boundary=${boundary}` } });
  assert.equal(up.status, 200, up.text);
  assert.equal(up.json.sha256, createHash("sha256").update(payload).digest("hex"));
  assert.equal((await call("GET", `${base}?path=up/big.bin`)).json.size, payload.length);

  assert.equal((await call("POST", `${base}/mkdir`, { body: { path: "new/deep/dir" } })).status, 200);
  assert.equal((await call("POST", `${base}/rename`, { body: { from: "docs/a.txt", to: "new/deep/dir/a.txt" } })).status, 200);
  assertError(await call("POST", `${base}/rename`, { body: { from: "docs/b.bin", to: "new/deep/dir/a.txt" } }), 409, "conflict");
  assertError(await call("GET", `${base}?path=docs/a.txt`), 404, "not_found");
  assertError(await call("POST", `${base}/delete`, { body: { path: "new" } }), 409, "conflict");
  assert.equal((await call("POST", `${base}/delete`, { body: { path: "new", recursive: true } })).status, 200);
  assertError(await call("GET", `${base}?path=new`), 404, "not_found");
  await call("DELETE", `/bots/${bot}/container`);
});

test("download through a symlink sends the file it names (its size, its ETag); a FIFO, a device or a dangling link is a clear error before any byte", async () => {
  const bot = "api-links";
  assert.equal((await call("POST", `/bots/${bot}/container`)).status, 200);
  const made = await call("POST", `/bots/${bot}/container/exec`, { body: { command: "mkdir -p /data/d && printf 'hello, links\\n' > /data/d/real.txt && ln -s d/real.txt /data/rel && ln -s /data/rel /data/abs && mkfifo /data/fifo && ln -s nowhere /data/dangling" } });
  assert.equal(made.json.exit_code, 0, made.text);
  const direct = await request(`${s.url}/bots/${bot}/container/fs/download?path=d/real.txt`, { headers: { authorization: `Bearer ${s.adminToken}` } });
  assert.equal(await direct.body.text(), "hello, links\n");
  for (const p of ["rel", "abs"]) {
    const res = await request(`${s.url}/bots/${bot}/container/fs/download?path=${p}`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(res.statusCode, 200, p);
    assert.equal(res.headers["content-length"], "13", p);
    assert.equal(res.headers.etag, direct.headers.etag, p);
    assert.equal(await res.body.text(), "hello, links\n", p);
  }
  const ranged = await request(`${s.url}/bots/${bot}/container/fs/download?path=abs`, { headers: { authorization: `Bearer ${s.adminToken}`, range: "bytes=7-11" } });
  assert.equal(ranged.statusCode, 206);
  assert.equal(await ranged.body.text(), "links");
  assertError(await call("GET", `/bots/${bot}/container/fs/download?path=fifo`), 409, "conflict", /fifo is not a regular file/);
  assertError(await call("GET", `/bots/${bot}/container/fs/download?path=/dev/null`), 409, "conflict", /not a regular file/);
  assertError(await call("GET", `/bots/${bot}/container/fs/download?path=/dev/stdin`), 409, "conflict", /not a regular file/);
  assertError(await call("GET", `/bots/${bot}/container/fs/download?path=dangling`), 404, "not_found", /nowhere/);
  assert.equal((await call("DELETE", `/bots/${bot}/container`)).status, 200);
});

test("a download of 1 MiB or more is read by the server from the agent's open file: the workspace's file (not the host's of the same path), ranges, metrics by way; a sysfs file falls back to ReadRaw; no descriptor is left open, a client gone mid-way included", async () => {
  const bot = "api-handoff";
  assert.equal((await call("POST", `/bots/${bot}/container`)).status, 200);
  // The same absolute path on the host holds other bytes: what arrives must be the workspace's.
  const twin = `/tmp/memoh-handoff-twin-${process.pid}.bin`;
  fs.writeFileSync(twin, Buffer.alloc(5 * 1024 * 1024, 0x68));
  try {
    const made = await call("POST", `/bots/${bot}/container/exec`, {
      body: { command: `dd if=/dev/urandom of=${twin} bs=1024 count=5000 2>/dev/null && ln -s ${twin} /data/twin && sha256sum ${twin} && printf small > /data/small.txt && head -c 67108864 /dev/zero > /data/memoh-handoff-twin-64m` },
    });
    assert.equal(made.json.exit_code, 0, made.text);
    const inside = String(made.json.stdout).split(" ")[0];
    const metric = async (via: string): Promise<number> => {
      const m = new RegExp(`^memoh_download_bytes_total\\{via="${via}"\\} (\\d+)$`, "m").exec((await call("GET", "/metrics")).text);
      return m ? Number(m[1]) : 0;
    };
    const before = { handoff: await metric("handoff"), stream: await metric("stream") };
    const whole = await request(`${s.url}/bots/${bot}/container/fs/download?path=twin`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(whole.statusCode, 200);
    assert.equal(whole.headers["content-length"], String(5000 * 1024));
    const body = Buffer.from(await whole.body.arrayBuffer());
    assert.equal(createHash("sha256").update(body).digest("hex"), inside);
    const ranged = await request(`${s.url}/bots/${bot}/container/fs/download?path=${twin}`, { headers: { authorization: `Bearer ${s.adminToken}`, range: "bytes=1000000-3097151" } });
    assert.equal(ranged.statusCode, 206);
    assert.equal(ranged.headers["content-range"], `bytes 1000000-3097151/${5000 * 1024}`);
    assert.ok(Buffer.from(await ranged.body.arrayBuffer()).equals(body.subarray(1000000, 3097152)));
    // Below 1 MiB the bytes come through ReadRaw.
    const small = await request(`${s.url}/bots/${bot}/container/fs/download?path=small.txt`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(await small.body.text(), "small");
    assert.equal((await metric("handoff")) - before.handoff, 5000 * 1024 + 2097152);
    assert.equal((await metric("stream")) - before.stream, 5);
    // A sysfs file of more than 1 MiB (the kernel's BTF): the agent hands it off (it has a
    // size), the server refuses it (its bytes may depend on who reads them) and streams it.
    const btf = await call("POST", `/bots/${bot}/container/exec`, { body: { command: "sha256sum /sys/kernel/btf/vmlinux && stat -c %s /sys/kernel/btf/vmlinux" } });
    assert.equal(btf.json.exit_code, 0, `this test reads the kernel's BTF (/sys/kernel/btf/vmlinux): ${btf.text}`);
    const [btfSum, btfSize] = String(btf.json.stdout).split(/\s+/).filter((w) => w !== "" && w !== "/sys/kernel/btf/vmlinux");
    assert.ok(Number(btfSize) >= 1024 * 1024, `BTF of ${btfSize} bytes`);
    const sysfs = await request(`${s.url}/bots/${bot}/container/fs/download?path=/sys/kernel/btf/vmlinux`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(sysfs.statusCode, 200);
    assert.equal(createHash("sha256").update(Buffer.from(await sysfs.body.arrayBuffer())).digest("hex"), btfSum);
    assert.equal((await metric("stream")) - before.stream, 5 + Number(btfSize));
    assert.equal((await metric("handoff")) - before.handoff, 5000 * 1024 + 2097152);
    // The server's descriptors of the file, read here on the host.
    const serverPid = s.pid()!;
    const serverHolds = () =>
      fs.readdirSync(`/proc/${serverPid}/fd`).filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/${serverPid}/fd/${fd}`).includes("memoh-handoff-twin");
        } catch {
          return false; // closed since the listing
        }
      }).length;
    // A client that stops reading after its first bytes holds the server's read open (the
    // server waits for it to drain); once it goes away, the server closes the file.
    // (64 MiB: more than the socket buffers between them take.)
    const partial = await request(`${s.url}/bots/${bot}/container/fs/download?path=memoh-handoff-twin-64m`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    const [first] = (await once(partial.body, "data")) as [Buffer];
    partial.body.pause();
    assert.ok(first.length > 0);
    await waitFor("the server to wait for the client, the file open", () => (serverHolds() === 1 ? true : undefined));
    partial.body.destroy();
    // Neither the server nor the agent holds the file afterwards (in the workspace the shell
    // that looks holds it once itself, so a listing that shows nothing fails too).
    await waitFor("the server to close the downloaded file", () => (serverHolds() === 0 ? true : undefined));
    await waitFor("the agent to close the handed-off file", async () => {
      // (ls and grep are not given the shell's descriptor: 3<&-.)
      const open = await call("POST", `/bots/${bot}/container/exec`, { body: { command: `exec 3<${twin}; ls -l /proc/[0-9]*/fd/ 2>/dev/null 3<&- | grep -c memoh-handoff-twin 3<&-` } });
      return String(open.json.stdout).trim() === "1" ? true : undefined;
    });
  } finally {
    fs.rmSync(twin, { force: true });
  }
  assert.equal((await call("DELETE", `/bots/${bot}/container`)).status, 200);
});

test("exec: argv or command, env, cwd, stdin, user, timeout; NDJSON streams as it comes; a client that goes away kills the process group", async () => {
  const bot = "api-exec";
  await call("POST", `/bots/${bot}/container`);
  const ex = `/bots/${bot}/container/exec`;
  const r = await call("POST", ex, { body: { command: "cd /tmp && pwd; echo $GREETING; cat; echo err >&2; exit 3", env: { GREETING: "hello" }, stdin: "from stdin\n" } });
  assert.deepEqual({ stdout: r.json.stdout, stderr: r.json.stderr, code: r.json.exit_code }, { stdout: "/tmp\nhello\nfrom stdin\n", stderr: "err\n", code: 3 });
  const t = await call("POST", ex, { body: { argv: ["sleep", "30"], timeout_s: 0.5 } });
  assert.equal(t.json.timed_out, true);
  assertError(await call("POST", ex, { body: { argv: ["true"], command: "true" } }), 400, "invalid_argument", /exactly one/);
  assertError(await call("POST", ex, { body: {} }), 400, "invalid_argument");
  assertError(await call("POST", ex, { body: { command: "true", user: "nobody-here" } }), 400, "invalid_argument", /nobody-here/);

  // NDJSON: lines arrive while the command still runs.
  const res = await request(`${s.url}${ex}`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, accept: "application/x-ndjson", "content-type": "application/json" },
    body: JSON.stringify({ command: "echo first; sleep 1; echo second >&2; exit 5" }),
  });
  const lines: Array<{ line: Json; at: number }> = [];
  let buf = "";
  for await (const chunk of res.body) {
    buf += chunk.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      lines.push({ line: JSON.parse(buf.slice(0, i)) as Json, at: Date.now() });
      buf = buf.slice(i + 1);
    }
  }
  assert.deepEqual(lines.map((l) => l.line), [{ stdout: "first\n" }, { stderr: "second\n" }, { exit: { code: 5, signal: null, timed_out: false, duration_ms: (lines[2]!.line.exit as Json).duration_ms } }]);
  assert.ok(lines[1]!.at - lines[0]!.at >= 700, "the first line was not streamed before the command ended");
  // A character whose bytes come in two chunks arrives whole.
  const split = await request(`${s.url}${ex}`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, accept: "application/x-ndjson", "content-type": "application/json" },
    body: JSON.stringify({ command: "printf 'caf\\303'; sleep 0.5; printf '\\251\\n'" }),
  });
  const splitLines = (await split.body.text()).trim().split("\n").map((l) => JSON.parse(l) as Json);
  assert.equal(splitLines.map((l) => l.stdout ?? "").join(""), "café\n", JSON.stringify(splitLines));

  // A streaming client that goes away: the command's process group is killed.
  const controller = new AbortController();
  const gone = await request(`${s.url}${ex}`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.adminToken}`, accept: "application/x-ndjson", "content-type": "application/json" },
    body: JSON.stringify({ command: "sleep 300 & echo started; wait" }),
    signal: controller.signal,
  });
  for await (const chunk of gone.body) {
    if (chunk.toString().includes("started")) break;
  }
  controller.abort();
  await waitFor("the sleep to be killed", async () => {
    const ps = await call("POST", ex, { body: { command: "ps -o args | grep -c '^sleep 300' || true" } });
    return ps.json.stdout === "0\n" ? true : undefined;
  }, 15_000, 200);
  await call("DELETE", `/bots/${bot}/container`);
});

test("terminal: a WebSocket types, reads back, resizes; stty size shows the new size; it closes with the exit code", async () => {
  const bot = "api-term";
  await call("POST", `/bots/${bot}/container`);
  const ws = new WebSocket(`${s.url.replace("http", "ws")}/bots/${bot}/container/terminal?cols=80&rows=24`, ["memoh.terminal", `bearer.${s.adminToken}`]);
  let screen = "";
  ws.on("message", (d: Buffer) => (screen += d.toString()));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  assert.equal(ws.protocol, "memoh.terminal");
  ws.send(Buffer.from("echo hi-$((40+2))\n"), { binary: true });
  await waitFor("the echo", () => (screen.includes("hi-42") ? true : undefined), 10_000);
  ws.send(JSON.stringify({ resize: { cols: 132, rows: 43 } }));
  ws.send(Buffer.from("stty size\n"), { binary: true });
  await waitFor("the new size", () => (screen.includes("43 132") ? true : undefined), 10_000);
  ws.send(Buffer.from("exit 7\n"), { binary: true });
  const { code, reason } = await closed;
  assert.equal(code, 4007, reason);
  assert.deepEqual(JSON.parse(reason), { exit_code: 7 });
  await call("DELETE", `/bots/${bot}/container`);
});

test("skills: upsert atomically, list with front matter, replace, delete; bad names, paths and front matter are refused and change nothing", async () => {
  const bot = "api-skills";
  await call("POST", `/bots/${bot}/container`);
  const route = `/bots/${bot}/container/skills`;
  assert.deepEqual((await call("GET", route)).json, { skills: [] });
  const md = (name: string, d: string) => `---\nname: ${name}\ndescription: ${d}\n---\n# ${name}\n`;
  const put = await call("POST", route, { body: { skills: [{ name: "pdf", files: { "SKILL.md": md("pdf", "Reads PDFs"), "scripts/run.sh": "echo run\n" } }] } });
  assert.equal(put.status, 200, put.text);
  const listed = (await call("GET", route)).json.skills as Json[];
  assert.deepEqual(listed.map((k) => ({ name: k.name, description: k.description, files: (k.files as string[]).sort() })), [{ name: "pdf", description: "Reads PDFs", files: ["SKILL.md", "scripts/run.sh"] }]);
  // Replace: the old file set goes.
  await call("POST", route, { body: { skills: [{ name: "pdf", files: { "SKILL.md": md("pdf", "Reads PDFs, v2") } }] } });
  const v2 = ((await call("GET", route)).json.skills as Json[])[0]!;
  assert.deepEqual({ d: v2.description, f: v2.files }, { d: "Reads PDFs, v2", f: ["SKILL.md"] });
  for (const bad of [
    { skills: [{ name: "../x", files: { "SKILL.md": md("x", "y") } }] },
    { skills: [{ name: "ok", files: { "../../etc/passwd": "x", "SKILL.md": md("ok", "y") } }] },
    { skills: [{ name: "ok", files: { "/abs": "x", "SKILL.md": md("ok", "y") } }] },
    { skills: [{ name: "ok", files: { "README.md": "no skill file" } }] },
    { skills: [{ name: "ok", files: { "SKILL.md": "no front matter" } }] },
    // The same file twice, the second not the one checked; a file that is also a folder, in a
    // second skill after a valid first one: nothing of either is written.
    { skills: [{ name: "ok", files: { "SKILL.md": md("ok", "y"), "./SKILL.md": "no front matter" } }] },
    { skills: [{ name: "pdf", files: { "SKILL.md": md("pdf", "replaced") } }, { name: "ok", files: { "SKILL.md": md("ok", "y"), a: "x", "a/b": "y" } }] },
  ]) {
    assertError(await call("POST", route, { body: bad }), 400, "invalid_argument");
  }
  assert.equal(((await call("GET", route)).json.skills as Json[])[0]!.description, "Reads PDFs, v2", "a refused upsert replaced a skill");
  assert.equal(((await call("GET", route)).json.skills as Json[]).length, 1, "a refused upsert changed something");
  assertError(await call("DELETE", route, { body: { names: ["nope"] } }), 404, "not_found");
  assert.deepEqual((await call("DELETE", route, { body: { names: ["pdf"] } })).json, { deleted: ["pdf"] });
  assert.deepEqual((await call("GET", route)).json, { skills: [] });
  await call("DELETE", `/bots/${bot}/container`);
});

test("a client that goes away mid-upload leaves the old file and no temp file; the server keeps serving", async () => {
  const bot = "api-upload-gone";
  await call("POST", `/bots/${bot}/container`);
  const base = `/bots/${bot}/container/fs`;
  assert.equal((await call("POST", `${base}/write`, { body: { path: "keep.txt", content: "old content" } })).status, 200);
  const entries = async () => ((await call("GET", `${base}/list?path=/data`)).json.entries as Json[]).map((e) => String(e.name));
  for (let round = 0; round < 3; round++) {
    const boundary = "g0ne";
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nkeep.txt\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="k"\r\n\r\n`;
    const url = new URL(s.url);
    const sock = net.connect(Number(url.port), url.hostname);
    sock.on("error", () => undefined);
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    // Announces 64 MiB, sends 2 MiB of it, then waits until the agent is writing its temp file.
    sock.write(
      `POST ${base}/upload HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${s.adminToken}\r\n` +
        `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n${head}`,
    );
    sock.write(Buffer.alloc(2 * 1024 * 1024, 0x6e));
    await waitFor("the agent's temp file", async () => ((await entries()).some((n) => n.includes(".memoh-tmp-")) ? true : undefined));
    sock.destroy();
    await waitFor("the temp file to go", async () => ((await entries()).some((n) => n.includes(".memoh-tmp-")) ? undefined : true));
    const read = await call("GET", `${base}/read?path=keep.txt`);
    assert.equal(read.json.content, "old content", `round ${round}: ${read.text}`);
  }
  assert.deepEqual(await entries(), ["keep.txt"]);
  assert.deepEqual((await call("GET", "/healthz", { token: null })).json, { status: "ok" });
  await call("DELETE", `/bots/${bot}/container`);
});

test("a workspace whose root filesystem the runtime refuses (its /etc/passwd made a directory) fails to start with a clear 409 and is marked error; after a rollback to an earlier version it starts again", async () => {
  const bot = "api-broken";
  assert.equal((await call("POST", `/bots/${bot}/container`)).status, 200);
  const good = await call("POST", `/bots/${bot}/container/snapshots`, { body: { display_name: "before the damage" } });
  assert.equal(good.status, 200, good.text);
  const damage = await call("POST", `/bots/${bot}/container/exec`, { body: { command: "rm -f /etc/passwd && mkdir /etc/passwd && test -d /etc/passwd" } });
  assert.equal(damage.json.exit_code, 0, damage.text);
  assert.equal((await call("POST", `/bots/${bot}/container/stop`, { body: { timeout_s: 1 } })).json.status, "stopped");
  assertError(await call("POST", `/bots/${bot}/container/start`), 409, "conflict", /cannot start: the OCI runtime refused its task: .*\/etc\/passwd: is a directory/);
  const st = await call("GET", `/bots/${bot}/container`);
  assert.deepEqual({ status: st.json.status, task: st.json.task }, { status: "error", task: "none" }, st.text);
  // A rollback keeps a workspace that is not running stopped; then it starts.
  const back = await call("POST", `/bots/${bot}/container/snapshots/rollback`, { body: { version: good.json.version } });
  assert.equal(back.status, 200, back.text);
  const after = await call("POST", `/bots/${bot}/container/start`);
  assert.deepEqual({ status: after.json.status, task: after.json.task }, { status: "running", task: "running" }, after.text);
  assert.equal((await call("POST", `/bots/${bot}/container/exec`, { body: { command: "test -f /etc/passwd" } })).json.exit_code, 0);
  assert.equal((await call("DELETE", `/bots/${bot}/container`)).status, 200);
});

test("abuse: NUL in a path, a 20 MB JSON body, a multipart without a file, a truncated multipart, invalid bot ids, unknown fields, numbers that are not finite: a clear 4xx, no side effect, still serving", async () => {
  const bot = "api-abuse";
  await call("POST", `/bots/${bot}/container`);
  const base = `/bots/${bot}/container/fs`;
  assertError(await call("GET", `${base}?path=a%00b`), 400, "invalid_argument");
  assertError(await call("POST", `${base}/write`, { body: { path: "x\u0000y", content: "z" } }), 400, "invalid_argument");
  assertError(await oversized(`/bots/${bot}/container/exec`, JSON.stringify({ command: "x".repeat(20 * 1024 * 1024) })), 413, "payload_too_large");
  assertError(await oversized(`${base}/write`, JSON.stringify({ path: "big", content: "x".repeat(30 * 1024 * 1024) })), 413, "payload_too_large");
  const boundary = "b0undary";
  const fieldOnly = `--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nnofile.txt\r\n--${boundary}--\r\n`;
  assertError(await call("POST", `${base}/upload`, { raw: fieldOnly, headers: { "content-type": `multipart/form-data; boundary=${boundary}` } }), 400, "invalid_argument", /no file/);
  // Bodies cut off before the closing boundary, at every stage of the file part: each
  // is refused and none leaves a file (an empty one included).
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\ntrunc.txt\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="t"\r\n\r\n`;
  const cuts = [head, `${head}partial data without the closing boundary`, `${head}${"x".repeat(200_000)}`, `${head}data\r\n--${boundary.slice(0, 4)}`];
  for (let i = 0; i < 24; i++) {
    const tr = await call("POST", `${base}/upload`, { raw: cuts[i % cuts.length]!, headers: { "content-type": `multipart/form-data; boundary=${boundary}` } });
    assert.ok(tr.status >= 400 && tr.status < 500, `cut ${i % cuts.length}: ${tr.status} ${tr.text}`);
    assertError(await call("GET", `${base}?path=trunc.txt`), 404, "not_found");
  }
  for (const badBot of ["Upper", "a..b", "x".repeat(80), "-lead"]) {
    assertError(await call("GET", `/bots/${encodeURIComponent(badBot)}/container`), 400, "invalid_argument");
  }
  assertError(await call("POST", `${base}/mkdir`, { body: { path: "d", surprise: true } }), 400, "invalid_argument");
  assertError(await call("POST", `/bots/${bot}/container`, { body: { imagee: "typo" } }), 400, "invalid_argument");
  assertError(await call("POST", `/bots/${bot}/container/exec`, { raw: "{not json", headers: { "content-type": "application/json" } }), 400, "invalid_argument");
  assertError(await call("GET", "/no/such/route"), 404, "not_found");
  // Strings that validation coerces to a number that is not finite, in a query, a body
  // and a path: refused like any other bad number, before anything runs.
  assertError(await call("GET", `/bots/${bot}/container/events?offset=Infinity`), 400, "invalid_argument", /querystring\/offset must be a finite number/);
  assertError(await call("GET", `${base}/list?path=/data&depth=1e999`), 400, "invalid_argument", /querystring\/depth must be a finite number/);
  assertError(await call("POST", `/bots/${bot}/container/exec`, { body: { command: "touch /data/ran", timeout_s: "Infinity" } }), 400, "invalid_argument", /body\/timeout_s must be a finite number/);
  assertError(await call("DELETE", `/bots/${bot}/container/snapshots/Infinity`), 400, "invalid_argument", /params\/version must be a finite number/);
  const tokensBefore = ((await call("GET", "/tokens")).json.tokens as Json[]).length;
  assertError(await call("POST", "/tokens", { body: { bot_id: bot, expires_in_s: "-Infinity" } }), 400, "invalid_argument", /body\/expires_in_s must be a finite number/);
  assert.equal(((await call("GET", "/tokens")).json.tokens as Json[]).length, tokensBefore, "a token was made");
  // Nothing of that reached the workspace.
  const ls = await call("GET", `${base}/list?path=/data`);
  assert.deepEqual((ls.json.entries as Json[]).map((e) => e.name).filter((n) => !String(n).startsWith(".")), []);
  assert.deepEqual((await call("GET", "/healthz", { token: null })).json, { status: "ok" });
  await call("DELETE", `/bots/${bot}/container`);
});
