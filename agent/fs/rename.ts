import type { Stats } from "node:fs";
import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { callSignal } from "../budget.js";
import { alreadyExists, errnoAt, failedPrecondition, invalidArgument, notFound } from "../errors.js";
import { FsPath, requestPath } from "../paths.js";
import { tempPathFor } from "./atomic.js";
import { removeTree } from "./delete.js";
import { mkdirParents } from "./mkdirp.js";
import { isErrno, lstatOrUndefined } from "./errno.js";
import { direntName, kindOf, openDirBytes } from "./fileinfo.js";
import { realLocation, refuseProtected } from "./guard.js";
import { moveNoReplace, sameFile } from "./no-replace.js";
import type { CancellableCall } from "./read.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/**
 * Moves a file or directory; the destination's parent is created. An existing
 * destination is replaced only with overwrite, and only by the same kind of
 * thing (a directory only when empty), as rename(2) allows. Without overwrite
 * the destination is taken atomically (no-replace.ts): one that appears while
 * the move runs is never replaced. Across file systems the tree is copied
 * next to the destination, moved into place the same way, and only then is
 * the source removed. Neither side may be (or hold) a place the agent needs
 * (guard.ts).
 */
export async function rename(ctx: AgentContext, req: pb.RenameRequest, call?: CancellableCall): Promise<MessageInitShape<typeof pb.RenameResponseSchema>> {
  const from = requestPath(ctx.dataDir, { path: req.from, pathBytes: req.fromBytes }, "from");
  const to = requestPath(ctx.dataDir, { path: req.to, pathBytes: req.toBytes }, "to");
  await refuseProtected(ctx, from, { verb: "move", field: "from" });
  const fromSt = await lstatOrUndefined(from.bytes);
  if (!fromSt) throw notFound(`from: ${from} does not exist`);
  if (from.equals(to)) return {};
  if (fromSt.isDirectory()) {
    // Compared on real paths: "to" may reach into "from" through a symlinked parent.
    const [realFrom, realTo] = await Promise.all([realLocation(from), realExistingAncestor(to)]);
    if (from.holds(to) || (realFrom && (realFrom.equals(realTo) || realFrom.holds(realTo)))) {
      throw invalidArgument(`cannot move directory ${from} into itself (${to})`);
    }
  }

  const toSt = await lstatOrUndefined(to.bytes);
  if (toSt) {
    await refuseProtected(ctx, to, { verb: "replace", field: "to" });
    await checkReplaceable(from, fromSt, to, toSt, req.overwrite);
    if (!fromSt.isDirectory() && sameFile(fromSt, toSt)) {
      await dropHardLink(from, to, fromSt);
      return {};
    }
  }

  try {
    await mkdirParents(to.parent());
  } catch (err) {
    if (isErrno(err, "ENOTDIR") || isErrno(err, "EEXIST")) throw failedPrecondition(`to: a parent of ${to} is not a directory`);
    throw errnoAt(err, to.shown);
  }
  try {
    if (req.overwrite) await fs.rename(from.bytes, to.bytes);
    else await moveNoReplace(from, to);
  } catch (err) {
    if (!isErrno(err, "EXDEV")) throw errnoAt(err, from.shown, to.shown);
    await moveAcrossDevices(from, to, { signal: call ? callSignal(call) : undefined, overwrite: req.overwrite });
  }
  return {};
}

/**
 * `from` and `to` name one file, where rename(2) does nothing. When they are
 * one directory entry reached by two paths (a symlinked parent, a bind mount;
 * always so for a file with a single link), that is right: nothing moves.
 * When they are two hard links, both names would stay, so the move takes
 * `from` away itself: by a rename to a temp name beside `to` rather than by
 * unlink(2), because were the two names one entry after all (a
 * case-insensitive directory), that rename moves the entry away and the next
 * one puts it back at `to`, where an unlink would have deleted it.
 */
async function dropHardLink(from: FsPath, to: FsPath, st: Stats): Promise<void> {
  if (st.nlink < 2 || (await sameEntry(from, to))) return;
  const temp = tempPathFor(to);
  try {
    try {
      await fs.rename(from.bytes, temp.bytes);
    } catch (err) {
      // Two mounts of one file system, which rename(2) does not cross; sameEntry
      // found two different entries, so unlinking `from` leaves `to`.
      if (isErrno(err, "EXDEV")) return await fs.unlink(from.bytes);
      throw err;
    }
    await fs.rename(temp.bytes, to.bytes);
    await fs.unlink(temp.bytes).catch((err: unknown) => {
      if (!isErrno(err, "ENOENT")) throw err;
    });
  } catch (err) {
    throw errnoAt(err, from.shown, to.shown);
  }
}

/** Same name in the same directory (compared by device and inode, however the paths reach it). */
async function sameEntry(a: FsPath, b: FsPath): Promise<boolean> {
  if (!a.name.equals(b.name)) return false;
  try {
    const [pa, pb] = await Promise.all([fs.stat(a.parent().bytes), fs.stat(b.parent().bytes)]);
    return sameFile(pa, pb);
  } catch {
    return false;
  }
}

/** The real path of the nearest existing directory above `p`. */
async function realExistingAncestor(p: FsPath): Promise<FsPath> {
  for (let dir = p.parent(); ; dir = dir.parent()) {
    try {
      return new FsPath(await fs.realpath(dir.bytes, { encoding: "buffer" }));
    } catch (err) {
      if (dir.isRoot || !(isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR"))) throw errnoAt(err, dir.shown);
    }
  }
}

async function checkReplaceable(from: FsPath, fromSt: Stats, to: FsPath, toSt: Stats, overwrite: boolean): Promise<void> {
  if (!overwrite) throw alreadyExists(`to: ${to} already exists; set overwrite to replace it`);
  if (toSt.isDirectory()) {
    if (!fromSt.isDirectory()) throw failedPrecondition(`cannot replace directory ${to} with non-directory ${from}`);
    if (!(await isEmptyDir(to))) throw failedPrecondition(`cannot replace ${to}: directory not empty; delete it first`);
  } else if (fromSt.isDirectory()) {
    throw failedPrecondition(`cannot replace non-directory ${to} with directory ${from}`);
  }
}

/** Reads one entry, not the whole directory. */
async function isEmptyDir(dir: FsPath): Promise<boolean> {
  const entries = await openDirBytes(dir.bytes, 1);
  try {
    return (await entries.read()) === null;
  } finally {
    await entries.close();
  }
}

/**
 * rename(2) across file systems: copy to a temp name beside `to`, rename it
 * into place (atomic on the destination's file system; without `overwrite`
 * it fails with ALREADY_EXISTS rather than replace anything at `to`, even
 * something created during the copy), then remove `from`.
 * A failed copy removes the partial copy and leaves the source untouched. So does a
 * cancelled one (`signal`: the caller went away or its deadline passed): the copy stops
 * before its next entry instead of moving a large tree for nobody. Once the copy is in
 * place the move completes; the source is removed whatever happens to the call.
 */
export async function moveAcrossDevices(from: FsPath, to: FsPath, opts: { signal?: AbortSignal; overwrite?: boolean } = {}): Promise<void> {
  const temp = tempPathFor(to);
  try {
    await copyTree(from, temp, undefined, opts.signal);
    if (opts.overwrite) await fs.rename(temp.bytes, to.bytes);
    else await moveNoReplace(temp, to);
  } catch (err) {
    const st = await lstatOrUndefined(temp.bytes).catch(() => undefined);
    if (st?.isDirectory()) await removeTree(temp).catch(() => undefined);
    else if (st) await fs.unlink(temp.bytes).catch(() => undefined);
    throw errnoAt(err, from.shown, to.shown);
  }
  try {
    const st = await fs.lstat(from.bytes);
    if (st.isDirectory()) await removeTree(from);
    else await fs.unlink(from.bytes);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw failedPrecondition(`copied ${from} to ${to}, but could not remove the source: ${reason}`);
  }
}

/**
 * Kernel file systems by statfs(2) type: their files are views of the kernel (reading
 * one runs driver code; /sys/kernel alone is thousands of them), not data a move could
 * copy, and their sources cannot be removed afterwards. A move from one is refused
 * before anything is copied.
 */
const KERNEL_FILE_SYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, "proc"],
  [0x62656572, "sysfs"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0x1cd1, "devpts"],
  [0x19800202, "mqueue"],
  [0xcafe4a11, "bpf"],
  [0x6165676c, "pstore"],
  [0x62656570, "configfs"],
  [0x65735543, "fusectl"],
]);

/** `probe` is where statfs(2) looks (it follows a symlink, so for one: its directory). */
async function refuseKernelFileSystem(probe: FsPath, moved: FsPath): Promise<void> {
  const kind = KERNEL_FILE_SYSTEMS.get((await fs.statfs(probe.bytes)).type);
  if (kind !== undefined) throw failedPrecondition(`cannot move ${moved} to another file system: it is on ${kind}, a kernel file system whose files cannot be copied`);
}

/**
 * Copies `from` (not following symlinks) to the new path `to`, keeping
 * modes, owners (when root) and modification times. Names are bytes
 * throughout, so names that are not UTF-8 are copied too. FIFOs, sockets and
 * devices cannot be recreated here and stop the copy; so does anything on a
 * kernel file system (checked at the top and where the copy enters another device).
 */
async function copyTree(from: FsPath, to: FsPath, parentDev: number | undefined, signal: AbortSignal | undefined): Promise<void> {
  signal?.throwIfAborted();
  const st = await fs.lstat(from.bytes);
  if (parentDev === undefined) await refuseKernelFileSystem(st.isSymbolicLink() ? from.parent() : from, from);
  else if (st.isDirectory() && st.dev !== parentDev) await refuseKernelFileSystem(from, from);
  if (st.isSymbolicLink()) {
    await fs.symlink(await fs.readlink(from.bytes, { encoding: "buffer" }), to.bytes);
  } else if (st.isFile()) {
    await fs.copyFile(from.bytes, to.bytes, fs.constants.COPYFILE_EXCL);
  } else if (st.isDirectory()) {
    await fs.mkdir(to.bytes, { mode: 0o700 });
    const entries = await openDirBytes(from.bytes);
    for await (const entry of entries) {
      const name = direntName(entry);
      await copyTree(from.child(name), to.child(name), st.dev, signal);
    }
  } else {
    throw failedPrecondition(`cannot move ${from} to another file system: it is ${kindOf(st)}, which cannot be copied`);
  }
  if (process.geteuid?.() === 0) await fs.lchown(to.bytes, st.uid, st.gid);
  if (!st.isSymbolicLink()) await fs.chmod(to.bytes, st.mode & 0o7777);
  await fs.lutimes(to.bytes, st.atime, st.mtime);
}
