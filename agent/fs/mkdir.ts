import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { alreadyExists, errnoAt, failedPrecondition, notFound } from "../errors.js";
import { requestPath, type FsPath } from "../paths.js";
import { modeOrDefault } from "./atomic.js";
import { isErrno } from "./errno.js";
import { mkdirParents } from "./mkdirp.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export const DEFAULT_DIR_MODE = 0o755;

/**
 * Creates a directory. With parents, missing parents are created and an
 * existing directory is fine (mkdir -p); without, the parent must exist and the
 * path must not. The new directory gets exactly `mode` (not filtered by the umask).
 */
export async function mkdir(ctx: AgentContext, req: pb.MkdirRequest): Promise<MessageInitShape<typeof pb.MkdirResponseSchema>> {
  const abs = requestPath(ctx.dataDir, req);
  const mode = modeOrDefault(req.mode, DEFAULT_DIR_MODE);
  try {
    if (req.parents) {
      const created = await mkdirParents(abs, mode);
      if (created !== undefined) await fs.chmod(abs.bytes, mode);
    } else {
      await fs.mkdir(abs.bytes, { mode });
      await fs.chmod(abs.bytes, mode);
    }
  } catch (err) {
    throw await explain(err, abs, req.parents);
  }
  return {};
}

async function explain(err: unknown, abs: FsPath, parents: boolean): Promise<unknown> {
  if (isErrno(err, "EEXIST")) {
    const st = await fs.lstat(abs.bytes).catch(() => undefined);
    if (st && !st.isDirectory()) return alreadyExists(`${abs} already exists and is not a directory`);
    return alreadyExists(`${abs} already exists${parents ? "" : " (set parents to accept an existing directory)"}`);
  }
  if (isErrno(err, "ENOENT") && !parents) {
    return notFound(`parent directory ${abs.parent()} does not exist; set parents to create it`);
  }
  // mkdir(2) says ENOENT under an existing parent where the file system makes no new
  // directories (/proc).
  if (isErrno(err, "ENOENT")) return failedPrecondition(`cannot create ${abs}: the file system there does not allow new directories`);
  if (isErrno(err, "ENOTDIR")) return failedPrecondition(`cannot create ${abs}: a parent is not a directory`);
  return errnoAt(err, abs.shown);
}
