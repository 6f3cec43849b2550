// Opening the regular file a read request names (ReadFile, ReadRaw).
import type { Stats } from "node:fs";
import { constants } from "node:fs";
import fs from "node:fs/promises";
import { errnoAt, failedPrecondition, invalidArgument } from "../errors.js";
import type { FsPath } from "../paths.js";
import { isErrno } from "./errno.js";
import { ReadFd } from "./fd.js";
import { kindOf } from "./fileinfo.js";

// O_NONBLOCK: opening a FIFO returns at once (and is then refused) instead of
// parking a libuv thread until some writer shows up. O_NOCTTY: opening a
// terminal never makes it the agent's controlling terminal.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;

export interface OpenedFile {
  /** The path as messages show it. */
  readonly abs: string;
  readonly fh: ReadFd;
  /** fstat of the open file: the file that is read, whatever replaced the path since. */
  readonly st: Stats;
}

/**
 * Opens `target` for reading and checks, on the open descriptor (so no race
 * with a rename), that it is a regular file. A directory is INVALID_ARGUMENT
 * (use ListDir); a FIFO, socket or device is FAILED_PRECONDITION naming what
 * it is, with a way to read it that works. The caller closes `fh`.
 */
export async function openRegularFile(target: FsPath, rpc: "ReadFile" | "ReadRaw"): Promise<OpenedFile> {
  let fh: ReadFd;
  try {
    fh = ReadFd.open(target.bytes, OPEN_FLAGS);
  } catch (err) {
    // open(2) of a Unix socket is ENXIO: say what the file is instead.
    if (isErrno(err, "ENXIO")) {
      const st = await fs.stat(target.bytes).catch(() => undefined);
      if (st && !st.isFile()) throw notRegular(target, st, rpc);
    }
    throw errnoAt(err, target.shown);
  }
  try {
    const st = fh.stat();
    if (!st.isFile()) throw notRegular(target, st, rpc);
    return { abs: target.shown, fh, st };
  } catch (err) {
    fh.close();
    throw err;
  }
}

function notRegular(target: FsPath, st: Stats, rpc: string): Error {
  if (st.isDirectory()) return invalidArgument(`${target} is a directory; use ListDir`);
  const how = st.isSocket()
    ? "a socket holds no bytes to read: connect to it from a process started with Exec"
    : st.isFIFO()
      ? "read the pipe from Exec instead (e.g. timeout 10 cat FILE: a read waits for a writer)"
      : "read it from Exec instead (e.g. head -c 65536 FILE)";
  return failedPrecondition(`${target} is ${kindOf(st)}, not a regular file; ${rpc} reads regular files only: ${how}`);
}
