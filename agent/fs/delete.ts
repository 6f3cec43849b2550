import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { failedPrecondition, invalidArgument } from "../errors.js";
import { resolvePath } from "../paths.js";
import { isErrno } from "./errno.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/**
 * Removes a file, a symlink (never what it points to), an empty directory, or
 * with recursive a whole tree. "/", the data dir and its ancestors are
 * refused: a relative "." or ".." resolves to them, and one stray call must
 * not wipe the workspace (delete its entries instead).
 */
export async function deleteFile(ctx: AgentContext, req: pb.DeleteFileRequest): Promise<MessageInitShape<typeof pb.DeleteFileResponseSchema>> {
  const abs = resolvePath(ctx.dataDir, req.path);
  if (abs === "/") throw invalidArgument("refusing to delete /");
  if (abs === ctx.dataDir) throw invalidArgument(`refusing to delete the data dir ${abs} itself; delete its entries instead`);
  if (ctx.dataDir.startsWith(abs + "/")) throw invalidArgument(`refusing to delete ${abs}: it holds the data dir ${ctx.dataDir}`);
  const st = await fs.lstat(abs);
  if (!st.isDirectory()) {
    await fs.unlink(abs);
  } else if (req.recursive) {
    await fs.rm(abs, { recursive: true });
  } else {
    try {
      await fs.rmdir(abs);
    } catch (err) {
      if (isErrno(err, "ENOTEMPTY") || isErrno(err, "EEXIST")) {
        throw failedPrecondition(`${abs}: directory not empty; set recursive to delete it with its contents`);
      }
      throw err;
    }
  }
  return {};
}
