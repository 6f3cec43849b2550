// Moves that must not replace what is at the destination: Rename without
// overwrite. Checking that `to` is free and then calling rename(2) leaves a
// window in which another Rename, or any process, creates `to`, and rename(2)
// then silently replaces it: of two Renames a→c and b→c both would succeed
// and a's content would be gone. Linux closes the window with
// renameat2(RENAME_NOREPLACE), which Node does not offer, so the destination
// is taken by a call that itself fails with EEXIST when the name is taken:
// link(2) for anything but a directory (the file appears under its new name
// whole and at once, then the old name goes), mkdir(2) of a placeholder for a
// directory (rename(2) may replace an empty directory).
import { constants, type Stats } from "node:fs";
import fs from "node:fs/promises";
import { alreadyExists, notFound } from "../errors.js";
import type { FsPath } from "../paths.js";
import { isErrno, lstatOrUndefined } from "./errno.js";

/** link(2) answers these where a file system or the file cannot take another hard link; rename(2) may still work. */
const NO_HARD_LINK = ["EPERM", "EOPNOTSUPP", "ENOTSUP", "EMLINK", "ENOSYS"];

export function sameFile(a: Pick<Stats, "dev" | "ino">, b: Pick<Stats, "dev" | "ino">): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

function taken(to: FsPath): Error {
  return alreadyExists(`to: ${to} already exists; set overwrite to replace it`);
}

/**
 * Moves `from` to `to`, which must not exist: when it does, or appears
 * meanwhile, the move fails with ALREADY_EXISTS and nothing changed. Other
 * failures are the system's errors (EXDEV included: the caller copies
 * instead). `to`'s parent must exist.
 */
export async function moveNoReplace(from: FsPath, to: FsPath): Promise<void> {
  const st = await fs.lstat(from.bytes);
  if (st.isDirectory()) return renameOntoPlaceholder(from, to, "directory");
  try {
    // Linux's link(2) does not follow a symlink: the link itself gets the new name.
    await fs.link(from.bytes, to.bytes);
  } catch (err) {
    if (isErrno(err, "EEXIST")) throw taken(to);
    if (NO_HARD_LINK.some((code) => isErrno(err, code))) return renameOntoPlaceholder(from, to, "file");
    throw err;
  }
  await dropOldName(from, to, await fs.lstat(to.bytes));
}

/**
 * After link(from, to): removes `from`, unless it no longer names the linked
 * file. Replaced by another file since, it is left alone (the move happened
 * before that). Gone, another Rename or a DeleteFile took the file first:
 * then, as rename(2) would have, this move fails, and its new name goes too.
 */
async function dropOldName(from: FsPath, to: FsPath, linked: Stats): Promise<void> {
  const now = await lstatOrUndefined(from.bytes);
  if (now && !sameFile(now, linked)) return;
  if (now) {
    try {
      await fs.unlink(from.bytes);
      return;
    } catch (err) {
      if (!isErrno(err, "ENOENT")) {
        await unlinkIfStill(to, linked);
        throw err;
      }
    }
  }
  await unlinkIfStill(to, linked);
  throw notFound(`from: ${from} does not exist`);
}

async function unlinkIfStill(p: FsPath, st: Stats): Promise<void> {
  const now = await lstatOrUndefined(p.bytes).catch(() => undefined);
  if (now && sameFile(now, st)) await fs.unlink(p.bytes).catch(() => undefined);
}

/**
 * Takes `to` with an empty placeholder made by mkdir(2) or an exclusive
 * create, then renames `from` over it. For a directory, and for a file where
 * no hard link can be made (a writer that opens `to` without O_EXCL in
 * between would write into the placeholder and lose that write, but nothing
 * anyone else put at `to` is replaced). A failed rename removes the
 * placeholder if it is still ours and empty.
 */
export async function renameOntoPlaceholder(from: FsPath, to: FsPath, kind: "directory" | "file"): Promise<void> {
  let placeholder: Stats;
  try {
    if (kind === "directory") {
      await fs.mkdir(to.bytes, { mode: 0o700 });
      placeholder = await fs.lstat(to.bytes);
    } else {
      const fh = await fs.open(to.bytes, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        placeholder = await fh.stat();
      } finally {
        await fh.close();
      }
    }
  } catch (err) {
    if (isErrno(err, "EEXIST")) throw taken(to);
    throw err;
  }
  try {
    await fs.rename(from.bytes, to.bytes);
  } catch (err) {
    const now = await lstatOrUndefined(to.bytes).catch(() => undefined);
    if (now && sameFile(now, placeholder)) {
      if (kind === "directory") await fs.rmdir(to.bytes).catch(() => undefined);
      else if (now.size === 0) await fs.unlink(to.bytes).catch(() => undefined);
    }
    // Something was put into the placeholder meanwhile: `to` is someone else's now.
    if (isErrno(err, "ENOTEMPTY") || isErrno(err, "EEXIST")) throw taken(to);
    throw err;
  }
}
