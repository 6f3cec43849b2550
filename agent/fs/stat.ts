import fs from "node:fs";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { errnoAt } from "../errors.js";
import { requestPath } from "../paths.js";
import { describe } from "./fileinfo.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** One path's metadata; a symlink is described, not followed. */
export async function stat(ctx: AgentContext, req: pb.StatRequest): Promise<MessageInitShape<typeof pb.StatResponseSchema>> {
  const abs = requestPath(ctx.dataDir, req);
  // Synchronous, as the read paths (fd.ts says why).
  try {
    return { info: describe(abs, abs.bytes, abs.name, fs.lstatSync(abs.bytes)) };
  } catch (err) {
    throw errnoAt(err, abs.shown);
  }
}
