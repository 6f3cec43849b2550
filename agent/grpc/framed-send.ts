// Bulk replies (ReadFile text, ReadRaw chunks) are built as whole gRPC frames
// around the file's bytes (proto/wire.ts frameAround): the bytes are read into
// a buffer with room before them, and the frame's head is written into that room.
// grpc-js's server serializes every reply into a fresh frame and copies the
// message into it (BaseServerInterceptingCall.serializeMessage), which for
// these replies would be one more copy of every byte and one more buffer of
// every size: an 8 MiB ReadFile held 16 MiB until it was sent, and every 64 KiB
// ReadRaw chunk was copied twice (into a scratch message, then into the frame).
//
// sendFramesAsTheyAre() wraps that one method so that a message which already
// is a frame (PreEncoded with `framed`, proto/rpc.ts) is written as it is. It is
// grpc-js's own code path otherwise. If a grpc-js version lacks the method the
// wrap is not made and framed messages go through `encode` and the copy, as
// before; framesInPlace() tells the budgets which of the two they pay for.
// Measured on the agent bench and the in-container worst-patterns test: see
// BENCHMARKS.md ("Frames built in place").
import { BaseServerInterceptingCall } from "@grpc/grpc-js/build/src/server-interceptors.js";
import { PreEncoded } from "../../proto/rpc.js";

type SerializeMessage = (this: unknown, value: unknown) => Buffer;

let installed = false;

/** Makes grpc-js's server write pre-built frames without copying them; false when this grpc-js cannot. */
export function sendFramesAsTheyAre(): boolean {
  if (installed) return true;
  const proto = BaseServerInterceptingCall.prototype as unknown as { serializeMessage?: SerializeMessage };
  const original = proto.serializeMessage;
  if (typeof original !== "function" || original.length !== 1) return false;
  proto.serializeMessage = function serializeMessage(this: unknown, value: unknown): Buffer {
    return value instanceof PreEncoded && value.framed ? value.framed : original.call(this, value);
  };
  installed = true;
  return true;
}

/** Whether a framed reply is sent from its own buffer (true) or copied once more by grpc-js. */
export function framesInPlace(): boolean {
  return installed;
}
