// BridgeClient.writeRaw that gives up (its source fails, or its signal aborts) must
// never leave the agent a stream that looks complete. HTTP/2 half-closes a request
// before it resets it, and an agent that reads the half-close first commits what it
// has: a fake ContainerService records what each WriteRaw stream delivered before it
// ended, and every one that ended must have ended on the abort message.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import { RpcError, Status } from "../../proto/rpc.js";
import type { WriteRawRequest } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../../host/bridge/client.js";
import { startFakeService, type FakeService } from "./helpers/fake-service.js";

interface Seen {
  messages: string[];
  /** The handler saw the request stream end (a half-close), not only a cancel. */
  halfClosed: boolean;
}

let fake: FakeService;
let client: BridgeClient;

/** The WriteRaw stream the server is serving now: the attempts run one at a time. */
let current: { started: () => void; ended: (seen: Seen) => void } | undefined;

/** Runs one attempt; `source` gets a promise of the server having read the start message. */
async function attempt(run: (started: Promise<void>) => Promise<unknown>): Promise<Seen> {
  let started!: () => void;
  let ended!: (seen: Seen) => void;
  const startedP = new Promise<void>((r) => (started = r));
  const endedP = new Promise<Seen>((r) => (ended = r));
  current = { started, ended };
  await run(startedP);
  return endedP;
}

before(async () => {
  fake = await startFakeService({
    writeRaw: (call: grpc.ServerReadableStream<WriteRawRequest, unknown>) =>
      new Promise((_resolve, reject) => {
        const mine = current!;
        const record: Seen = { messages: [], halfClosed: false };
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          mine.ended(record);
        };
        call.on("data", (req: WriteRawRequest) => {
          record.messages.push(req.msg.case ?? "empty");
          if (req.msg.case === "start") mine.started();
        });
        call.on("end", () => {
          record.halfClosed = true;
          finish();
          reject(new RpcError(Status.CANCELLED, "recorded"));
        });
        call.on("cancelled", finish);
      }),
  });
  client = fake.client;
});
after(() => fake.close());

test("a source that fails after the agent has the start, before its first byte or after some: every stream that half-closed ended on abort", async () => {
  let halfClosed = 0;
  for (let i = 0; i < 60; i++) {
    const bytes = i % 2 === 0 ? 0 : 100;
    const r = await attempt(async (started) => {
      async function* source(): AsyncGenerator<Uint8Array> {
        if (bytes > 0) yield new Uint8Array(bytes);
        await started;
        throw new Error("the source broke");
      }
      await assert.rejects(client.writeRaw(`fail-${i}`, source()), /the source broke/);
    });
    if (r.halfClosed) {
      halfClosed++;
      assert.equal(r.messages.at(-1), "abort", `attempt ${i}: the stream half-closed after ${r.messages.join(",")}`);
    }
    assert.ok(!r.messages.slice(0, -1).includes("abort"), `attempt ${i}: abort sent early: ${r.messages.join(",")}`);
  }
  // The half-close does reach the server: the case checked above is the one that happens.
  assert.ok(halfClosed > 0, "no stream half-closed: the test did not exercise the race");
});

test("an aborted signal mid-upload sends abort before the cancel", async () => {
  let halfClosed = 0;
  for (let i = 0; i < 30; i++) {
    const controller = new AbortController();
    const r = await attempt(async (started) => {
      async function* source(): AsyncGenerator<Uint8Array> {
        yield new Uint8Array(10);
        await started;
        controller.abort();
        yield new Uint8Array(10);
      }
      await assert.rejects(client.writeRaw(`signal-${i}`, source(), { signal: controller.signal }), (err: unknown) => err instanceof RpcError && err.code === Status.CANCELLED);
    });
    if (r.halfClosed) {
      halfClosed++;
      assert.equal(r.messages.at(-1), "abort", `attempt ${i}: the stream half-closed after ${r.messages.join(",")}`);
    }
    assert.ok(r.messages.filter((m) => m === "chunk").length <= 1, `attempt ${i}: a chunk after the abort: ${r.messages.join(",")}`);
  }
  assert.ok(halfClosed > 0, "no stream half-closed: the test did not exercise the race");
});

test("a signal aborted before the call sends nothing and rejects with CANCELLED", async () => {
  const controller = new AbortController();
  controller.abort();
  current = undefined;
  await assert.rejects(client.writeRaw("never", [new Uint8Array(5)], { signal: controller.signal }), (err: unknown) => err instanceof RpcError && err.code === Status.CANCELLED);
  // A later call is served normally, and it is the first the server saw since.
  const r = await attempt(async (started) => {
    async function* source(): AsyncGenerator<Uint8Array> {
      await started;
      throw new Error("stop");
    }
    await assert.rejects(client.writeRaw("after", source()), /stop/);
  });
  assert.equal(r.messages[0], "start");
});
