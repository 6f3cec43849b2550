import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { requestPath } from "../paths.js";
import { DEFAULT_FILE_MODE, modeOrDefault, writeAtomically } from "./atomic.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** Replaces a file atomically (temp file, fsync, rename); parents are created. */
export async function writeFile(ctx: AgentContext, req: pb.WriteFileRequest): Promise<MessageInitShape<typeof pb.WriteFileResponseSchema>> {
  const target = requestPath(ctx.dataDir, req);
  const mode = modeOrDefault(req.mode, DEFAULT_FILE_MODE);
  await writeAtomically(target, req.content, mode);
  return { bytesWritten: BigInt(req.content.byteLength) };
}
