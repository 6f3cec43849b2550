import type { PathLike, Stats } from "node:fs";
import fs from "node:fs/promises";

/** True when `err` is a Node system error with this errno code (ENOENT, EXDEV, …). */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** lstat that answers undefined for a missing path. */
export async function lstatOrUndefined(p: PathLike): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
}
