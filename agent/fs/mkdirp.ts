// mkdir -p for paths a caller names. Node's own recursive mkdir (20.x) loops for ever
// where creating a directory fails with ENOENT although its parent exists, as everywhere
// under /proc: `fs.mkdir("/proc/x", { recursive: true })` never calls back, and the agent
// spun on it until restarted. This one walks up to the nearest existing directory once,
// then creates each missing directory once; nothing is retried.
import fs from "node:fs/promises";
import type { FsPath } from "../paths.js";
import { isErrno } from "./errno.js";

function errno(code: "EEXIST" | "ENOTDIR", p: FsPath): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: ${p.shown}`);
  e.code = code;
  return e;
}

/**
 * Creates `dir` and its missing parents with `mode` (filtered by the umask, as mkdir(2)
 * does). Returns the first directory it created, undefined when `dir` existed. Fails as
 * Node's recursive mkdir does: EEXIST when `dir` is not a directory, ENOTDIR when a
 * parent is not; and with mkdir's own error (ENOENT on /proc, EACCES, EROFS…) when a
 * directory cannot be created.
 */
export async function mkdirParents(dir: FsPath, mode = 0o777): Promise<FsPath | undefined> {
  const missing: FsPath[] = [];
  for (let p = dir; ; p = p.parent()) {
    let isDir: boolean;
    try {
      isDir = (await fs.stat(p.bytes)).isDirectory();
    } catch (err) {
      if (!isErrno(err, "ENOENT") || p.isRoot) throw err;
      missing.push(p);
      continue;
    }
    if (!isDir) throw errno(p === dir ? "EEXIST" : "ENOTDIR", p);
    break;
  }
  let first: FsPath | undefined;
  for (const p of missing.reverse()) {
    try {
      await fs.mkdir(p.bytes, { mode });
    } catch (err) {
      // Made meanwhile by someone else: fine when it is a directory.
      if (!isErrno(err, "EEXIST")) throw err;
      if (!(await fs.stat(p.bytes)).isDirectory()) throw errno(p === dir ? "EEXIST" : "ENOTDIR", p);
      continue;
    }
    first ??= p;
  }
  return first;
}
