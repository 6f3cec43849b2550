import fs from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { resolvePath } from "../paths.js";
import { describe } from "./fileinfo.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** One path's metadata; a symlink is described, not followed. */
export async function stat(ctx: AgentContext, req: pb.StatRequest): Promise<MessageInitShape<typeof pb.StatResponseSchema>> {
  const abs = resolvePath(ctx.dataDir, req.path);
  const st = await fs.lstat(abs);
  return { info: await describe(abs, abs, path.basename(abs) || "/", st) };
}
