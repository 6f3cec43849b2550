import type { Stats } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../errors.js";
import { resolvePath } from "../paths.js";
import { tempPathFor } from "./atomic.js";
import { isErrno, lstatOrUndefined } from "./errno.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";


/**
 * Moves a file or directory; the destination's parent is created. An existing
 * destination is replaced only with overwrite, and only by the same kind of
 * thing (a directory only when empty), as rename(2) allows. Across file
 * systems the tree is copied next to the destination, renamed into place, and
 * only then is the source removed.
 */
export async function rename(ctx: AgentContext, req: pb.RenameRequest): Promise<MessageInitShape<typeof pb.RenameResponseSchema>> {
  const from = resolvePath(ctx.dataDir, req.from, "from");
  const to = resolvePath(ctx.dataDir, req.to, "to");
  if (from === ctx.dataDir || ctx.dataDir.startsWith(from === "/" ? "/" : from + "/")) {
    throw invalidArgument(`from: refusing to move ${from}: it is or holds the data dir ${ctx.dataDir}`);
  }
  const fromSt = await lstatOrUndefined(from);
  if (!fromSt) throw notFound(`from: ${from} does not exist`);
  if (from === to) return {};
  if (fromSt.isDirectory() && to.startsWith(from + "/")) {
    throw invalidArgument(`cannot move directory ${from} into itself (${to})`);
  }

  const toSt = await lstatOrUndefined(to);
  if (toSt) await checkReplaceable(from, fromSt, to, toSt, req.overwrite);

  try {
    await fs.mkdir(path.dirname(to), { recursive: true });
  } catch (err) {
    if (isErrno(err, "ENOTDIR") || isErrno(err, "EEXIST")) throw failedPrecondition(`to: a parent of ${to} is not a directory`);
    throw err;
  }
  try {
    await fs.rename(from, to);
  } catch (err) {
    if (!isErrno(err, "EXDEV")) throw err;
    await moveAcrossDevices(from, to);
  }
  return {};
}

async function checkReplaceable(from: string, fromSt: Stats, to: string, toSt: Stats, overwrite: boolean): Promise<void> {
  if (!overwrite) throw alreadyExists(`to: ${to} already exists; set overwrite to replace it`);
  if (toSt.isDirectory()) {
    if (!fromSt.isDirectory()) throw failedPrecondition(`cannot replace directory ${to} with non-directory ${from}`);
    const entries = await fs.readdir(to);
    if (entries.length > 0) throw failedPrecondition(`cannot replace ${to}: directory not empty; delete it first`);
  } else if (fromSt.isDirectory()) {
    throw failedPrecondition(`cannot replace non-directory ${to} with directory ${from}`);
  }
}

/**
 * rename(2) across file systems: copy to a temp name beside `to`, rename it
 * into place (atomic on the destination's file system), then remove `from`.
 * A failed copy removes the partial copy and leaves the source untouched.
 */
export async function moveAcrossDevices(from: string, to: string): Promise<void> {
  const temp = tempPathFor(to);
  try {
    await fs.cp(from, temp, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true, errorOnExist: true, force: false });
    await fs.rename(temp, to);
  } catch (err) {
    await fs.rm(temp, { recursive: true, force: true });
    throw err;
  }
  try {
    await fs.rm(from, { recursive: true });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw failedPrecondition(`copied ${from} to ${to}, but could not remove the source: ${reason}`);
  }
}
