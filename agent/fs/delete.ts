import { constants } from "node:fs";
import fs, { type FileHandle } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { errnoAt, failedPrecondition } from "../errors.js";
import { requestPath, showBytes, type FsPath } from "../paths.js";
import { isErrno } from "./errno.js";
import { direntName, openDirBytes } from "./fileinfo.js";
import { inodeKeys, refuseProtected } from "./guard.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** A directory opened to walk it: never through a symlink (a link swapped in is refused, not followed). */
const OPEN_DIR = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * Removes a file, a symlink (never what it points to), an empty directory, or
 * with recursive a whole tree. "/", the data dir, the agent's socket (dir),
 * the runtime bundle and whatever holds one of them are refused however the
 * path names them (guard.ts): one stray call must not wipe the workspace.
 */
export async function deleteFile(ctx: AgentContext, req: pb.DeleteFileRequest): Promise<MessageInitShape<typeof pb.DeleteFileResponseSchema>> {
  const abs = requestPath(ctx.dataDir, req);
  const places = await refuseProtected(ctx, abs, { verb: "delete" });
  const st = await fs.lstat(abs.bytes).catch((err: unknown) => {
    throw errnoAt(err, abs.shown);
  });
  try {
    if (!st.isDirectory()) await fs.unlink(abs.bytes);
    else if (req.recursive) await removeTree(abs, inodeKeys(places));
    else await fs.rmdir(abs.bytes);
  } catch (err) {
    if (!req.recursive && (isErrno(err, "ENOTEMPTY") || isErrno(err, "EEXIST"))) {
      throw failedPrecondition(`${abs}: directory not empty; set recursive to delete it with its contents`);
    }
    throw errnoAt(err, abs.shown);
  }
  return {};
}

/** `name` inside the directory open as `fd`: a short path however deep that directory is. */
function inDir(fd: number, name: Buffer | string): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${fd}/`), typeof name === "string" ? Buffer.from(name) : name]);
}

/**
 * Removes the directory `top` and everything below it, at any depth: paths
 * longer than PATH_MAX cannot be given to a system call, so the walk never
 * builds one. It holds the directory it is in open and names entries
 * relative to it (/proc/self/fd/<fd>/<name>, the openat(2) of Node), going
 * down by opening a subdirectory and back up through "..": a handful of
 * descriptors whatever the depth. Symlinks are removed, never followed, and a
 * directory that is one of `protectedInodes` (a bind mount of the data dir)
 * stops the walk.
 */
export async function removeTree(top: FsPath, protectedInodes: ReadonlySet<string> = new Set()): Promise<void> {
  const trail: Buffer[] = []; // names from top down to the current directory
  const here = (): string => [top.shown, ...trail.map((n) => showBytes(n))].join("/");
  let dir: FileHandle = await fs.open(top.bytes, OPEN_DIR);
  try {
    for (;;) {
      const sub = await emptyUntilSubdir(dir.fd, here);
      if (sub !== undefined) {
        let child: FileHandle;
        try {
          child = await fs.open(inDir(dir.fd, sub), OPEN_DIR);
        } catch (err) {
          // Replaced by something else since it was listed: remove that instead.
          if (isErrno(err, "ELOOP") || isErrno(err, "ENOTDIR")) {
            await fs.unlink(inDir(dir.fd, sub)).catch((e: unknown) => {
              if (!isErrno(e, "ENOENT")) throw errnoAt(e, `${here()}/${showBytes(sub)}`);
            });
            continue;
          }
          if (isErrno(err, "ENOENT")) continue;
          throw errnoAt(err, `${here()}/${showBytes(sub)}`);
        }
        const st = await child.stat();
        if (protectedInodes.has(`${st.dev}:${st.ino}`)) {
          await child.close();
          throw failedPrecondition(`refusing to delete ${here()}/${showBytes(sub)}: it is a place the agent needs (the data dir, its socket dir or the runtime bundle); what was deleted before it stays deleted`);
        }
        await dir.close();
        dir = child;
        trail.push(sub);
        continue;
      }
      const name = trail.pop();
      if (name === undefined) break;
      const parent = await fs.open(inDir(dir.fd, ".."), OPEN_DIR);
      await dir.close();
      dir = parent;
      await fs.rmdir(inDir(dir.fd, name)).catch((err: unknown) => {
        throw errnoAt(err, `${here()}/${showBytes(name)}`);
      });
    }
  } finally {
    await dir.close().catch(() => undefined);
  }
  await fs.rmdir(top.bytes);
}

/**
 * Unlinks the non-directories of the directory open as `fd` until it meets a
 * subdirectory, whose name it returns; undefined when none is left.
 */
async function emptyUntilSubdir(fd: number, here: () => string): Promise<Buffer | undefined> {
  const entries = await openDirBytes(`/proc/self/fd/${fd}`, 128);
  // Leaving the loop early closes the directory stream.
  for await (const entry of entries) {
    const name = direntName(entry);
    if (entry.isDirectory()) return name;
    try {
      await fs.unlink(inDir(fd, name));
    } catch (err) {
      if (isErrno(err, "ENOENT")) continue;
      if (isErrno(err, "EISDIR")) return name;
      throw errnoAt(err, `${here()}/${showBytes(name)}`);
    }
  }
  return undefined;
}
