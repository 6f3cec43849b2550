// The agent's bulk replies are whole gRPC frames that grpc-js's server must write
// as they are (agent/grpc/framed-send.ts wraps its serializeMessage); every other
// reply goes through grpc-js's own framing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BaseServerInterceptingCall } from "@grpc/grpc-js/build/src/server-interceptors.js";
import { framesInPlace, sendFramesAsTheyAre } from "../../agent/grpc/framed-send.js";
import { preEncoded, preFramed } from "../../proto/rpc.js";
import { frameAround, FRAME_HEADROOM_BYTES, GRPC_PREFIX_BYTES } from "../../proto/wire.js";

type Serialize = (this: unknown, value: unknown) => Buffer;

test("this grpc-js takes frames as they are: a framed reply is written from its own buffer, others are framed by grpc-js", () => {
  assert.equal(sendFramesAsTheyAre(), true, "grpc-js's BaseServerInterceptingCall has no serializeMessage(value) to wrap");
  assert.equal(framesInPlace(), true);
  const serializeMessage = (BaseServerInterceptingCall.prototype as unknown as { serializeMessage: Serialize }).serializeMessage;
  const call = { handler: { serialize: (v: unknown) => (v instanceof Buffer ? v : Buffer.from(JSON.stringify(v))) } };

  const buf = Buffer.alloc(FRAME_HEADROOM_BYTES + 3);
  buf.write("abc", FRAME_HEADROOM_BYTES);
  const frame = frameAround(buf, FRAME_HEADROOM_BYTES, buf.byteLength, 1, [{ field: 2, value: 9 }]);
  // The very buffer, not a copy of it.
  assert.equal(serializeMessage.call(call, preFramed(frame)), frame);

  // A message that is not a frame gets grpc-js's prefix and a copy, as before.
  const plain = serializeMessage.call(call, Buffer.from("xyz"));
  assert.deepEqual(plain, Buffer.from([0, 0, 0, 0, 3, 0x78, 0x79, 0x7a]));
  const encoded = serializeMessage.call({ handler: { serialize: (v: { encode(): Buffer }) => v.encode() } }, preEncoded(Buffer.from("q")));
  assert.deepEqual(encoded, Buffer.from([0, 0, 0, 0, 1, 0x71]));

  // Anyone else serializing a framed message gets the message without the prefix.
  assert.deepEqual((preFramed(frame) as unknown as { encode(): Buffer }).encode(), frame.subarray(GRPC_PREFIX_BYTES));
  // Wrapping twice changes nothing.
  assert.equal(sendFramesAsTheyAre(), true);
  assert.equal(serializeMessage, (BaseServerInterceptingCall.prototype as unknown as { serializeMessage: Serialize }).serializeMessage);
});
