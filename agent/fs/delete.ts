import { constants } from "node:fs";
import fs, { type FileHandle } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { errnoAt, failedPrecondition, RpcError, Status } from "../errors.js";
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
    else if (req.recursive) await removeTree(abs, { protectedInodes: inodeKeys(places) });
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

export interface RemoveTreeOptions {
  /** "dev:ino" of directories the walk must not enter (guard.ts): one of them stops it. */
  protectedInodes?: ReadonlySet<string>;
  /**
   * Called with the shown path of each subdirectory the walk has just entered,
   * before it touches anything in it: lets a test change the tree at a known point.
   */
  onEnter?: (shown: string) => Promise<void> | void;
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
 *
 * ".." is whatever directory holds this one now, not necessarily the one the
 * walk came down from: were a directory on the way moved elsewhere by another
 * process (`mv /data/tmp/a/b /data/`), going up from it would land in its new
 * parent (/data) and empty that. So the walk remembers the device and inode
 * of every directory it went down from and, going up, checks that ".." is
 * that directory; when it is not, the walk stops with ABORTED before touching
 * anything there, as fts(3) does for rm -r.
 */
export async function removeTree(top: FsPath, opts: RemoveTreeOptions = {}): Promise<void> {
  const protectedInodes = opts.protectedInodes ?? new Set<string>();
  // From top down to the current directory: each step's name, and the key
  // ("dev:ino") of the directory it was taken from.
  const trail: Array<{ name: Buffer; from: string }> = [];
  const pathOf = (depth: number): string => [top.shown, ...trail.slice(0, depth).map((step) => showBytes(step.name))].join("/");
  const here = (): string => pathOf(trail.length);
  let dir: FileHandle = await fs.open(top.bytes, OPEN_DIR);
  try {
    let dirKey = keyOf(await dir.stat());
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
        const childKey = keyOf(await child.stat());
        if (protectedInodes.has(childKey)) {
          await child.close();
          throw failedPrecondition(`refusing to delete ${here()}/${showBytes(sub)}: it is a place the agent needs (the data dir, its socket dir or the runtime bundle); what was deleted before it stays deleted`);
        }
        await dir.close();
        dir = child;
        trail.push({ name: sub, from: dirKey });
        dirKey = childKey;
        await opts.onEnter?.(here());
        continue;
      }
      const step = trail.at(-1);
      if (step === undefined) break;
      const left = here();
      const parent = await fs.open(inDir(dir.fd, ".."), OPEN_DIR).catch((err: unknown) => {
        throw errnoAt(err, `${left}/..`);
      });
      let parentKey: string;
      try {
        parentKey = keyOf(await parent.stat());
      } catch (err) {
        await parent.close();
        throw errnoAt(err, `${left}/..`);
      }
      if (parentKey !== step.from) {
        await parent.close();
        throw new RpcError(
          Status.ABORTED,
          `the tree changed while it was deleted: ${left} is no longer in ${pathOf(trail.length - 1)} (another process moved it); ` +
            `the delete stopped there and touched nothing outside the directories it had entered; what was deleted before stays deleted`,
        );
      }
      trail.pop();
      await dir.close();
      dir = parent;
      dirKey = parentKey;
      await fs.rmdir(inDir(dir.fd, step.name)).catch((err: unknown) => {
        // Renamed within this directory meanwhile: the next listing meets it again.
        if (!isErrno(err, "ENOENT")) throw errnoAt(err, `${here()}/${showBytes(step.name)}`);
      });
    }
  } finally {
    await dir.close().catch(() => undefined);
  }
  await fs.rmdir(top.bytes);
}

function keyOf(st: { dev: number; ino: number }): string {
  return `${st.dev}:${st.ino}`;
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
