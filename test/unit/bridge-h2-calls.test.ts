// H2Calls, the host's hand-framed unary and server-streaming calls to a bridge agent:
// against a grpc-js server (what the agent runs) calls, statuses, deadlines and
// cancellations behave as through grpc-js; against a scripted HTTP/2 server every
// reply that breaks the gRPC protocol fails with a clear status instead of a wrong
// answer, and a dropped connection is UNAVAILABLE and then reconnected.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { rpcCode, RpcError, Status, type StatusCode } from "../../proto/rpc.js";
import { ContainerService, FileInfoSchema, ReadRawChunkSchema, type ReadRawRequest, type StatRequest } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { H2Calls } from "../../host/bridge/h2-calls.js";
import { startFakeService, type FakeService } from "./helpers/fake-service.js";

const REPO = path.resolve(import.meta.dirname, "../..");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-h2-calls-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Resolves when a server-side call is cancelled by its client. */
function cancelled(call: { cancelled: boolean; once(ev: "cancelled", fn: () => void): unknown }): Promise<void> {
  return call.cancelled ? Promise.resolve() : new Promise((resolve) => call.once("cancelled", () => resolve()));
}

function expectCode(code: StatusCode, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof RpcError, `not an RpcError: ${String(err)}`);
    assert.equal(err.codeName, Status[code], err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

// ---------------------------------------------------------------- against grpc-js

let fake: FakeService;
let calls: H2Calls;
const serverSaw = { cancelled: [] as string[] };
let hold: Array<() => void> = [];

before(async () => {
  fake = await startFakeService({
    stat: async (req: StatRequest, call: grpc.ServerUnaryCall<StatRequest, unknown>) => {
      if (req.path === "missing") throw new RpcError(Status.NOT_FOUND, "no such file: /data/ü 100% «x»");
      if (req.path === "hang") {
        await cancelled(call);
        serverSaw.cancelled.push(req.path);
        return {};
      }
      return { info: { name: req.path, size: 42n, mode: 0o644 } };
    },
    readRaw: async (req: ReadRawRequest, call: grpc.ServerWritableStream<ReadRawRequest, MessageInitShape<typeof ReadRawChunkSchema>>) => {
      const sizes = req.path === "sizes" ? [1, 0, 100 * 1024, 3 * 1024 * 1024 + 7, 5] : [64 * 1024, 64 * 1024];
      let offset = 0n;
      for (const n of sizes) {
        call.write({ offset, data: Buffer.alloc(n, Number(offset % 251n)), fileSize: 1n });
        offset += BigInt(n);
      }
      if (req.path === "fails-after") throw new RpcError(Status.DATA_LOSS, "the file shrank");
      if (req.path === "endless") {
        await cancelled(call);
        serverSaw.cancelled.push(req.path);
      }
    },
  });
  calls = new H2Calls(fake.socket);
});
after(() => {
  calls.close();
  for (const release of hold) release();
  hold = [];
  fake.close();
});

test("unary calls to a grpc-js server: the reply decoded, an error's code and its message (percent-decoded) kept", async () => {
  const res = await calls.unary(ContainerService.method.stat, { path: "a.txt" });
  assert.equal(res.info?.name, "a.txt");
  assert.equal(res.info?.size, 42n);
  await assert.rejects(calls.unary(ContainerService.method.stat, { path: "missing" }), expectCode(Status.NOT_FOUND, /^no such file: \/data\/ü 100% «x»$/));
  // Many at once on the one connection.
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => calls.unary(ContainerService.method.stat, { path: `f${i}` })));
  assert.deepEqual(many.map((r) => r.info?.name), Array.from({ length: 200 }, (_, i) => `f${i}`));
});

test("a server stream delivers every message in order, whatever their sizes; an error after messages fails the stream with its code", async () => {
  const got: Array<[bigint, number]> = [];
  for await (const chunk of calls.serverStream(ContainerService.method.readRaw, { path: "sizes" })) {
    got.push([chunk.offset, chunk.data.length]);
    assert.ok(chunk.data.every((b) => b === Number(chunk.offset % 251n)), `chunk at ${chunk.offset} holds other bytes`);
  }
  assert.deepEqual(got, [[0n, 1], [1n, 0], [1n, 100 * 1024], [1n + 100n * 1024n, 3 * 1024 * 1024 + 7], [1n + 100n * 1024n + 3n * 1024n * 1024n + 7n, 5]]);
  let seen = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of calls.serverStream(ContainerService.method.readRaw, { path: "fails-after" })) seen++;
    })(),
    expectCode(Status.DATA_LOSS, /the file shrank/),
  );
  assert.ok(seen <= 2, `${seen} messages`);
});

test("a deadline fails the call with DEADLINE_EXCEEDED and the agent sees it cancelled; so does an abort (CANCELLED) and a stream the caller stops reading", async () => {
  const t0 = Date.now();
  await assert.rejects(calls.unary(ContainerService.method.stat, { path: "hang" }, { timeoutMs: 200 }), expectCode(Status.DEADLINE_EXCEEDED, /Stat: no answer within 200 ms/));
  assert.ok(Date.now() - t0 < 5_000);
  const waitSeen = async (n: number) => {
    for (const end = Date.now() + 5_000; serverSaw.cancelled.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
    assert.equal(serverSaw.cancelled.length, n, `the server saw ${serverSaw.cancelled.join(", ")}`);
  };
  await waitSeen(1);

  const ac = new AbortController();
  const pending = calls.unary(ContainerService.method.stat, { path: "hang" }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(pending, expectCode(Status.CANCELLED));
  await waitSeen(2);

  for await (const chunk of calls.serverStream(ContainerService.method.readRaw, { path: "endless" })) {
    assert.equal(chunk.offset, 0n);
    break;
  }
  await waitSeen(3);
  assert.deepEqual(serverSaw.cancelled, ["hang", "hang", "endless"]);
});

test("nothing listening is UNAVAILABLE; a request larger than the limit is refused before it is sent", async () => {
  const nowhere = new H2Calls(path.join(tmp, "nobody.sock"));
  try {
    await assert.rejects(nowhere.unary(ContainerService.method.info, {}), expectCode(Status.UNAVAILABLE, /Info: the agent is unavailable/));
  } finally {
    nowhere.close();
  }
  const small = new H2Calls(fake.socket, 64);
  try {
    await assert.rejects(small.unary(ContainerService.method.stat, { path: "x".repeat(100) }), expectCode(Status.RESOURCE_EXHAUSTED, /Sent message larger than max \(102 vs\. 64\)/));
  } finally {
    small.close();
  }
  calls.close();
  await assert.rejects(calls.unary(ContainerService.method.stat, { path: "a" }), expectCode(Status.UNAVAILABLE, /closed/));
  calls = new H2Calls(fake.socket);
});

// ---------------------------------------------------------------- against a scripted HTTP/2 server

type Script = (stream: http2.ServerHttp2Stream) => void;

function frame(msg: Uint8Array, flags = 0, announced = msg.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(announced, 1);
  return Buffer.concat([head, msg]);
}
const info = (name: string) => toBinary(FileInfoSchema, create(FileInfoSchema, { name }));
/** A StatResponse{info=1} around a FileInfo. */
const statReply = (name: string) => {
  const inner = info(name);
  return Buffer.concat([Buffer.from([0x0a, inner.length]), inner]);
};
const OK = { "grpc-status": "0" };
const grpcHead = { ":status": 200, "content-type": "application/grpc" };

let refusedOnce = 0;
const scripts: Record<string, Script> = {
  "http-503": (s) => s.respond({ ":status": 503 }, { endStream: true }),
  "html": (s) => {
    s.respond({ ":status": 200, "content-type": "text/html" });
    s.end("<html>");
  },
  "compressed": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    s.end(frame(statReply("a"), 1));
  },
  "huge": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    s.end(frame(Buffer.alloc(10), 0, 1 << 30));
  },
  "two": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    s.end(Buffer.concat([frame(statReply("a")), frame(statReply("b"))]));
  },
  "none": (s) => s.respond({ ...grpcHead, ...OK }, { endStream: true }),
  "cut": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    s.end(frame(statReply("a")).subarray(0, 6));
  },
  "no-status": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers({ "x-other": "1" }));
    s.end(frame(statReply("a")));
  },
  "bad-status": (s) => s.respond({ ...grpcHead, "grpc-status": "abc" }, { endStream: true }),
  "trailers-only-error": (s) => s.respond({ ...grpcHead, "grpc-status": "7", "grpc-message": "no%20entry%" }, { endStream: true }),
  "byte-by-byte": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    const bytes = frame(statReply("one-by-one"));
    let i = 0;
    const next = () => {
      if (i === bytes.length) return void s.end();
      s.write(bytes.subarray(i, ++i), next);
    };
    next();
  },
  // Forty 64 KiB messages and the status at once: the trailers arrive long before a slow reader has read the data.
  "burst": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    for (let i = 0; i < 40; i++) s.write(frame(toBinary(ReadRawChunkSchema, create(ReadRawChunkSchema, { offset: BigInt(i * 65536), data: Buffer.alloc(65536, i) }))));
    s.end();
  },
  // Forty good messages, then one with the compressed flag, then an OK status, all at once.
  "burst-then-bad": (s) => {
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    for (let i = 0; i < 40; i++) s.write(frame(toBinary(ReadRawChunkSchema, create(ReadRawChunkSchema, { offset: BigInt(i * 65536), data: Buffer.alloc(65536, i) }))));
    s.write(frame(toBinary(ReadRawChunkSchema, create(ReadRawChunkSchema, { offset: 40n * 65536n, data: Buffer.alloc(10) })), 1));
    s.end();
  },
  "reset-cancel": (s) => s.close(http2.constants.NGHTTP2_CANCEL),
  "refused": (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM),
  // Refused unseen the first time (as a stream sent while the agent closes an idle connection is), answered the second.
  "refused-once": (s) => {
    if (refusedOnce++ === 0) return void s.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    s.respond(grpcHead, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(OK));
    s.end(frame(statReply("second try")));
  },
  "drop": (s) => {
    s.respond(grpcHead);
    s.write(frame(statReply("a")).subarray(0, 3), () => s.session?.destroy());
  },
};

let raw: http2.Http2Server;
let rawSocket: string;
let rawCalls: H2Calls;
before(async () => {
  raw = http2.createServer();
  raw.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    stream.resume();
    const script = scripts[String(headers["x-script"])];
    if (script) script(stream);
    else stream.respond({ ...grpcHead, "grpc-status": "12" }, { endStream: true });
  });
  rawSocket = path.join(tmp, "raw.sock");
  raw.listen(rawSocket);
  await once(raw, "listening");
  rawCalls = new H2Calls(rawSocket);
});
after(() => {
  rawCalls.close();
  raw.close();
});

const statVia = (script: string) => rawCalls.unary(ContainerService.method.stat, { path: "x" }, { metadata: { "x-script": script }, timeoutMs: 5_000 });

test("replies that break the gRPC protocol fail with a clear status, never as an answer; a refused call is tried once more", async () => {
  const cases: Array<[string, StatusCode, RegExp]> = [
    ["http-503", Status.UNAVAILABLE, /HTTP 503/],
    ["html", Status.UNKNOWN, /content-type "text\/html"/],
    ["compressed", Status.INTERNAL, /flags 1/],
    ["huge", Status.RESOURCE_EXHAUSTED, /Received message larger than max \(1073741824 vs\. 16777216\)/],
    ["two", Status.UNIMPLEMENTED, /more than one message/],
    ["none", Status.UNIMPLEMENTED, /OK without a message/],
    ["cut", Status.INTERNAL, /within a message/],
    ["no-status", Status.UNKNOWN, /without a status/],
    ["bad-status", Status.UNKNOWN, /unknown grpc-status "abc"/],
    ["trailers-only-error", Status.PERMISSION_DENIED, /^no entry%$/],
    ["reset-cancel", Status.CANCELLED, /the agent cancelled the call/],
    ["refused", Status.UNAVAILABLE, /refused/],
    ["unknown-script", Status.UNIMPLEMENTED, /.*/],
  ];
  for (const [script, code, pattern] of cases) await assert.rejects(statVia(script), expectCode(code, pattern), script);
  // A call the agent refused unseen is made once more, and only once.
  assert.equal((await statVia("refused-once")).info?.name, "second try");
  assert.equal(refusedOnce, 2);
  // The connection survived all of them.
  assert.equal((await statVia("byte-by-byte")).info?.name, "one-by-one");
});

test("a slow reader of a server stream gets every message still buffered when the status arrived, and a broken one among them fails the stream", async () => {
  const offsets: number[] = [];
  for await (const chunk of rawCalls.serverStream(ContainerService.method.readRaw, { path: "x" }, { metadata: { "x-script": "burst" } })) {
    assert.ok(chunk.data.length === 65536 && chunk.data.every((b) => b === offsets.length), `message ${offsets.length}`);
    offsets.push(Number(chunk.offset));
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.deepEqual(offsets, Array.from({ length: 40 }, (_, i) => i * 65536));

  // A broken message behind the buffered ones fails the stream, although an OK status followed it.
  let read = 0;
  await assert.rejects(
    (async () => {
      for await (const _ of rawCalls.serverStream(ContainerService.method.readRaw, { path: "x" }, { metadata: { "x-script": "burst-then-bad" } })) {
        read++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })(),
    expectCode(Status.INTERNAL, /flags 1/),
  );
  assert.ok(read <= 40, `${read} messages`);
});

test("a connection that drops mid-call is UNAVAILABLE; the next call connects again", async () => {
  await assert.rejects(statVia("drop"), (err: unknown) => rpcCode(err) === Status.UNAVAILABLE && /Stat: the agent is unavailable/.test((err as Error).message));
  assert.equal((await statVia("byte-by-byte")).info?.name, "one-by-one");
});

test("an idle client does not keep the process alive; a call in flight does", async () => {
  const script = `
    import { H2Calls } from ${JSON.stringify(path.join(REPO, "host/bridge/h2-calls.ts"))};
    import { ContainerService } from ${JSON.stringify(path.join(REPO, "proto/gen/memoh/bridge/v1/bridge_pb.ts"))};
    const calls = new H2Calls(${JSON.stringify(fake.socket)});
    const res = await calls.unary(ContainerService.method.stat, { path: "from-child" });
    console.log(res.info.name);
    // No close(): the open connection must not hold the process.
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
  clearTimeout(timer);
  assert.equal(signal, null, "the child had to be killed: the connection kept it alive");
  assert.equal(code, 0);
  assert.equal(out.trim(), "from-child");
});
