// Reaching a workspace's bridge socket without following links.
//
// A workspace's socket dir (<data_root>/run/<bot>, the container's /run/memoh)
// is writable by the workspace's root, who can replace bridge.sock with a
// symlink to a host path: another bot's socket. The host therefore never dials
// the path. It opens it with O_PATH|O_NOFOLLOW (the link itself, never its
// target), checks that the fd is a socket, and dials /proc/self/fd/<fd>: the
// kernel resolves that magic link to the very inode that was checked, so a
// later swap of the path changes nothing. A socket inode serves only the
// listener that created it: every connection through the fd, reconnects
// included, reaches the same agent. The fd stays open for the channel's life.
import fs from "node:fs";

/** Linux's O_PATH (a handle on the file itself, no I/O); Node's fs.constants does not define it. */
const O_PATH = 0o10000000;

export type BridgeSocketProblem = "missing" | "not-a-socket" | "unusable";

/** The socket path cannot be dialled; `problem` says why. */
export class BridgeSocketError extends Error {
  constructor(
    message: string,
    readonly problem: BridgeSocketProblem,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "BridgeSocketError";
  }
}

/** An open handle on a bridge socket, and the address that dials exactly it. */
export interface PinnedSocket {
  /** The path that was opened. */
  readonly path: string;
  readonly fd: number;
  /** `unix:/proc/self/fd/<fd>`, for grpc-js. */
  readonly address: string;
  /** Whether the path still names the pinned socket (false once it was removed or replaced). */
  stillAtPath(): boolean;
  /** Closes the fd; later calls do nothing. */
  close(): void;
}

function describeType(st: fs.Stats): string {
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isDirectory()) return "a directory";
  if (st.isFile()) return "a regular file";
  if (st.isFIFO()) return "a FIFO";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "not a socket";
}

/**
 * Opens the socket at socketPath without following a link there and returns
 * its pinned address. Throws BridgeSocketError: "missing" when nothing is
 * there, "not-a-socket" naming the file type (a symlink included), "unusable"
 * for any other failure.
 */
export function pinSocket(socketPath: string): PinnedSocket {
  let fd: number;
  try {
    fd = fs.openSync(socketPath, O_PATH | fs.constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new BridgeSocketError(`${socketPath} does not exist`, "missing", { cause: err });
    throw new BridgeSocketError(`cannot open ${socketPath}: ${(err as Error).message}`, "unusable", { cause: err });
  }
  let pinned: fs.Stats;
  try {
    pinned = fs.fstatSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    throw new BridgeSocketError(`cannot stat ${socketPath}: ${(err as Error).message}`, "unusable", { cause: err });
  }
  if (!pinned.isSocket()) {
    fs.closeSync(fd);
    const link = pinned.isSymbolicLink() ? " (links there are never followed)" : "";
    throw new BridgeSocketError(`${socketPath} is ${describeType(pinned)}, not a socket${link}`, "not-a-socket");
  }
  let open = true;
  return {
    path: socketPath,
    fd,
    address: `unix:/proc/self/fd/${fd}`,
    stillAtPath() {
      if (!open) return false;
      try {
        const now = fs.lstatSync(socketPath);
        return now.ino === pinned.ino && now.dev === pinned.dev;
      } catch {
        return false;
      }
    },
    close() {
      if (!open) return;
      open = false;
      fs.closeSync(fd);
    },
  };
}
