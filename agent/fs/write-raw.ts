import { createHash } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { invalidArgument, RpcError, Status } from "../errors.js";
import { requestPath } from "../paths.js";
import { AtomicFile, DEFAULT_FILE_MODE, modeOrDefault } from "./atomic.js";
import { noReadAhead } from "../exec/stream.js";
import { nextMessage } from "./next-message.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type WriteRawResponseInit = MessageInitShape<typeof pb.WriteRawResponseSchema>;
type WriteRawCall = grpc.ServerReadableStream<pb.WriteRawRequest, WriteRawResponseInit>;

function cancelled(target: string): RpcError {
  return new RpcError(Status.CANCELLED, `write to ${target} was cancelled; the file was left untouched`);
}

/**
 * Streams a file's bytes into a temp file next to the target; the target is
 * replaced only when the stream completes. Messages are pulled one at a time
 * and the call reads none ahead (noReadAhead), so a fast client waits for the
 * disk instead of filling memory. Abort,
 * cancel, disconnect or any error discards the temp file.
 */
export async function writeRaw(ctx: AgentContext, call: WriteRawCall): Promise<WriteRawResponseInit> {
  let file: AtomicFile | undefined;
  let received = 0;
  const hash = createHash("sha256");
  noReadAhead(call);
  try {
    const gone = (): Error => cancelled(file?.target ?? "the file");
    for (;;) {
      const req = await nextMessage<pb.WriteRawRequest>(call, gone, {
        ms: ctx.writeIdleMs,
        error: () => new RpcError(Status.DEADLINE_EXCEEDED, `no WriteRaw message for ${ctx.writeIdleMs} ms; ${file?.target ?? "the file"} was left untouched`),
      });
      if (req === undefined) break;
      const msg = req.msg;
      if (!file) {
        if (msg.case !== "start") throw invalidArgument(`the first WriteRaw message must be start, got ${msg.case ?? "an empty message"}`);
        const target = requestPath(ctx.dataDir, msg.value);
        file = await AtomicFile.create(target, modeOrDefault(msg.value.mode, DEFAULT_FILE_MODE));
        continue;
      }
      switch (msg.case) {
        case "chunk": {
          const { data, offset } = msg.value;
          if (offset !== BigInt(received)) {
            throw invalidArgument(`chunk offset ${offset} does not follow the bytes sent so far: expected ${received}, got ${offset}`);
          }
          await file.write(data);
          hash.update(data);
          received += data.byteLength;
          break;
        }
        case "abort":
          throw cancelled(file.target);
        case "start":
          throw invalidArgument("start may only be sent once");
        default:
          throw invalidArgument("empty WriteRaw message");
      }
    }
    if (!file) throw invalidArgument("the WriteRaw stream ended before its start message");
    // A client that cancels (RST_STREAM) also ends the request stream, and grpc-js
    // reports the end before the cancel. The fsync inside commit() gives the
    // event loop the turns it needs to deliver the cancel, so check right before the rename.
    const target = file.target;
    await file.commit(() => {
      if (call.cancelled) throw cancelled(target);
    });
  } catch (err) {
    await file?.discard();
    throw err;
  }
  return { bytesWritten: BigInt(received), sha256: hash.digest("hex") };
}
