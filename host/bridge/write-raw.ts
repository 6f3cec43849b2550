// The client side of WriteRaw: a file streamed to the agent, which replaces the
// target only when the stream ends (temp file + rename).
//
// Giving up (the source fails, the signal aborts) sends WriteRaw's abort message
// and half-closes. A cancel alone is not enough: HTTP/2 half-closes a request before
// it resets it, and an agent that reads the half-close first sees a complete upload
// and commits it. grpc-js passes a message through its filters before it reaches the
// HTTP/2 stream, so a cancel right after the abort would overtake it; the half-close
// keeps its order, and the cancel comes only if the agent does not answer the abort
// within ABORT_WAIT_MS.
import { once } from "node:events";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { RpcError, Status, type CallOptions, type RpcClient } from "../../proto/rpc.js";
import { ContainerService, type WriteRawStartSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { protocolError } from "./read-tree.js";

export const RAW_CHUNK_BYTES = 64 * 1024;
/** How long a WriteRaw that gave up waits for the agent to confirm the abort before it cancels. */
const ABORT_WAIT_MS = 5_000;

export async function writeRawStream(
  rpc: RpcClient,
  start: MessageInitShape<typeof WriteRawStartSchema>,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: CallOptions = {},
): Promise<{ bytesWritten: number; sha256: string }> {
  const { signal, ...callOpts } = opts;
  if (signal?.aborted) throw new RpcError(Status.CANCELLED, "the WriteRaw was cancelled before it started");
  const { call, response } = rpc.clientStream(ContainerService.method.writeRaw, callOpts);
  let settled = false;
  let ended = false;
  // Observed at once: the response rejects when the agent fails mid-stream.
  const answered = response.then(
    () => undefined,
    () => undefined,
  );
  void answered.then(() => (settled = true));
  const discard = () => {
    if (settled || ended) {
      call.cancel();
      return;
    }
    ended = true;
    call.write({ msg: { case: "abort", value: true } });
    call.end();
    const timer = setTimeout(() => call.cancel(), ABORT_WAIT_MS);
    timer.unref();
    void answered.then(() => clearTimeout(timer));
  };
  signal?.addEventListener("abort", discard, { once: true });
  let offset = 0n;
  const send = async (msg: Parameters<typeof call.write>[0]) => {
    if (!call.write(msg)) await Promise.race([once(call, "drain"), response]);
  };
  try {
    try {
      await send({ msg: { case: "start", value: start } });
      upload: for await (const buf of source) {
        for (let i = 0; i < buf.length; i += RAW_CHUNK_BYTES) {
          // The signal's abort has half-closed the call: nothing more may be written.
          if (ended) break upload;
          const data = buf.subarray(i, i + RAW_CHUNK_BYTES);
          await send({ msg: { case: "chunk", value: { data, offset } } });
          offset += BigInt(data.length);
        }
      }
      if (!ended) {
        ended = true;
        call.end();
      }
    } catch (err) {
      discard();
      await answered;
      throw err;
    }
    // After an aborted signal this is the agent's CANCELLED.
    const res = await response;
    if (res.bytesWritten !== offset) throw protocolError(`WriteRaw wrote ${res.bytesWritten} of ${offset} bytes`);
    return { bytesWritten: Number(res.bytesWritten), sha256: res.sha256 };
  } finally {
    signal?.removeEventListener("abort", discard);
  }
}
