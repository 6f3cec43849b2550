// Streaming calls to containerd end when the daemon stops answering: an idle
// timeout between messages for Content.Read and Content.Write, a deadline for
// list streams, and no idle timeout on the event stream (silence is normal
// there). A fake containerd in this process plays the hung daemon.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import type { DescService } from "@bufbuild/protobuf";
import { addService, RpcError, Status, type ServiceHandlers } from "../../proto/rpc.js";
import { Content, WriteAction } from "../../proto/gen/containerd/services/content/v1/content_pb.js";
import { Snapshots } from "../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import { Events } from "../../proto/gen/containerd/services/events/v1/events_pb.js";
import { ContainerdConnection } from "../../host/containerd/connection.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { listContent, readContent, writeBlob, type BlobSource } from "../../host/containerd/content.js";
import { readDocument } from "../../host/containerd/images.js";
import { SnapshotService } from "../../host/containerd/snapshots.js";
import { subscribe } from "../../host/containerd/events.js";

/** Every method of `service`: the given ones, the rest answer UNIMPLEMENTED. */
function handlers<S extends DescService>(service: S, impl: Partial<Record<string, unknown>>): ServiceHandlers<S & { method: Record<string, never> }> {
  const out: Record<string, unknown> = {};
  for (const m of service.methods) {
    out[m.localName] = impl[m.localName] ?? (async () => {
      throw new RpcError(Status.UNIMPLEMENTED, `${m.name} is not faked`);
    });
  }
  return out as ServiceHandlers<S & { method: Record<string, never> }>;
}

/** Resolves when the client goes away, so a handler that "hangs" still ends with the call. */
const untilCancelled = (call: { once(event: "cancelled", listener: () => void): unknown }) => new Promise<void>((resolve) => call.once("cancelled", () => resolve()));

const STEADY_DIGEST = "sha256:steady";
const STALL_DIGEST = "sha256:stall";
const STREAM_IDLE_MS = 300;
let dir: string;
let server: grpc.Server;
let socket: string;
let conn: ContainerdConnection;
let publishEvent: (() => void) | undefined;
/** What the fake Content.Write does after STAT: answer every request, or go silent. */
let writeMode: "answer" | "silent" = "answer";

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-fake-ctd-"));
  socket = path.join(dir, "containerd.sock");
  server = new grpc.Server();
  addService(
    server,
    Content,
    handlers(Content, {
      read: async (req: { digest: string }, call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (req.digest === STEADY_DIGEST) {
          // Slower in total than the idle timeout, but never silent for that long.
          for (let i = 0; i < 6; i++) {
            call.write({ offset: BigInt(i), data: Buffer.from([i]) });
            await sleep(STREAM_IDLE_MS / 3);
          }
          return;
        }
        call.write({ offset: 0n, data: Buffer.from("first chunk") });
        await untilCancelled(call);
      },
      list: async (_req: unknown, call: grpc.ServerWritableStream<unknown, unknown>) => {
        // Chatty but endless: only a deadline on the whole call ends it.
        const timer = setInterval(() => call.write({ info: [{ digest: "sha256:x", size: 1n, labels: {} }] }), STREAM_IDLE_MS / 4);
        await untilCancelled(call);
        clearInterval(timer);
      },
      write: async (call: grpc.ServerDuplexStream<{ action: WriteAction; ref: string; total: bigint; offset: bigint; data: Uint8Array }, unknown>) => {
        let offset = 0n;
        const ended = untilCancelled(call);
        call.on("data", (req) => {
          if (req.action === WriteAction.STAT) call.write({ action: WriteAction.STAT, offset: 0n, total: req.total });
          else if (writeMode === "silent") return;
          else if (req.action === WriteAction.WRITE) {
            offset += BigInt(req.data.length);
            call.write({ action: WriteAction.WRITE, offset, total: req.total });
          } else if (req.action === WriteAction.COMMIT) call.write({ action: WriteAction.COMMIT, offset, total: req.total });
        });
        await Promise.race([ended, new Promise((resolve) => call.once("end", resolve))]);
      },
    }),
  );
  addService(
    server,
    Snapshots,
    handlers(Snapshots, {
      list: async (_req: unknown, call: grpc.ServerWritableStream<unknown, unknown>) => untilCancelled(call),
    }),
  );
  addService(
    server,
    Events,
    handlers(Events, {
      subscribe: async (_req: unknown, call: grpc.ServerWritableStream<unknown, unknown>) => {
        publishEvent = () => call.write({ namespace: "fake", topic: "/tasks/oom", event: { typeUrl: "containerd.events.TaskOOM", value: new Uint8Array() } });
        await untilCancelled(call);
      },
    }),
  );
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  conn = new ContainerdConnection({ address: socket, namespace: "fake", streamIdleTimeoutMs: STREAM_IDLE_MS, defaultTimeoutMs: 1000 });
});

after(() => {
  conn?.close();
  server?.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

const isDeadline = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof ContainerdError, `not a ContainerdError: ${String(err)}`);
  assert.equal(err.code, "deadline_exceeded", err.message);
  assert.match(err.message, pattern);
  return true;
};

test("Content.Read: a stream that goes silent fails after the idle timeout, not never", { timeout: 10_000 }, async () => {
  const t0 = Date.now();
  await assert.rejects(readContent(conn, STALL_DIGEST), isDeadline(/Content\.Read.*no message from containerd for 300 ms/));
  const took = Date.now() - t0;
  assert.ok(took >= STREAM_IDLE_MS - 20 && took < 3000, `took ${took} ms`);
  // Image documents (configs, manifests) are read through the same connection stream.
  await assert.rejects(readDocument(conn, STALL_DIGEST, 4 * 1024 * 1024), isDeadline(/no message from containerd/));
  // A per-call idle timeout wins over the connection's.
  const t1 = Date.now();
  await assert.rejects(readContent(conn, STALL_DIGEST, { idleTimeoutMs: 100 }), isDeadline(/for 100 ms/));
  assert.ok(Date.now() - t1 < STREAM_IDLE_MS, "the connection's idle timeout was used instead of the call's");
});

test("Content.Read: a slow stream that keeps sending is not cut off", { timeout: 10_000 }, async () => {
  const t0 = Date.now();
  const data = await readContent(conn, STEADY_DIGEST);
  assert.deepEqual([...data], [0, 1, 2, 3, 4, 5]);
  assert.ok(Date.now() - t0 > STREAM_IDLE_MS, "the stream was expected to last longer than the idle timeout");
});

test("list streams have a deadline for the whole listing", { timeout: 10_000 }, async () => {
  const t0 = Date.now();
  await assert.rejects(listContent(conn), (err) => err instanceof ContainerdError && err.code === "deadline_exceeded" && /Content\.List/.test(err.message));
  const took = Date.now() - t0;
  assert.ok(took >= 950 && took < 4000, `Content.List took ${took} ms, the default deadline is 1000 ms`);
  const t1 = Date.now();
  await assert.rejects(new SnapshotService(conn).list([], { timeoutMs: 200 }), (err) => err instanceof ContainerdError && err.code === "deadline_exceeded" && /Snapshots\.List/.test(err.message));
  assert.ok(Date.now() - t1 < 900, "the call's timeoutMs was not used");
});

function bufferSource(data: Buffer, pauseMs = 0): BlobSource {
  return async () => ({
    from: 0,
    chunks: (async function* () {
      for (let i = 0; i < data.length; i += 4) {
        if (pauseMs) await sleep(pauseMs);
        yield data.subarray(i, i + 4);
      }
    })(),
  });
}

test("Content.Write: no reply from containerd fails the write after the idle timeout", { timeout: 10_000 }, async () => {
  const data = Buffer.from("some layer bytes");
  const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
  writeMode = "silent";
  try {
    const t0 = Date.now();
    await assert.rejects(
      writeBlob(conn, bufferSource(data), { ref: "r1", digest, size: data.length, name: "layer 1", idleTimeoutMs: 250 }),
      isDeadline(/Content\.Write for layer 1: no reply from containerd for 250 ms/),
    );
    assert.ok(Date.now() - t0 < 3000);
  } finally {
    writeMode = "answer";
  }
});

test("Content.Write: a slow source does not count as containerd being idle", { timeout: 10_000 }, async () => {
  const data = Buffer.from("sixteen bytes!!!");
  const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
  // 4 chunks 150 ms apart: 600 ms of reading, twice the idle timeout.
  const res = await writeBlob(conn, bufferSource(data, 150), { ref: "r2", digest, size: data.length, idleTimeoutMs: 300 });
  assert.deepEqual(res, { existed: false, written: data.length, resumedFrom: 0 });
});

test("Events.Subscribe: silence longer than the idle timeout is fine", { timeout: 10_000 }, async () => {
  const sub = subscribe(conn);
  const got: string[] = [];
  let failure: unknown;
  const reading = (async () => {
    try {
      for await (const e of sub) got.push(e.topic);
    } catch (err) {
      failure = err;
    }
  })();
  try {
    await sleep(STREAM_IDLE_MS * 3);
    assert.equal(failure, undefined, `the event stream failed: ${String(failure)}`);
    assert.ok(publishEvent, "the fake never saw the subscription");
    publishEvent();
    const deadline = Date.now() + 3000;
    while (got.length === 0 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(got, ["/tasks/oom"]);
  } finally {
    sub.close();
    await reading;
  }
  assert.equal(failure, undefined);
});
