// The agent's socket file.
//
// A draining agent must never delete a socket that is no longer its own: the
// host (or a new agent) may have put another socket at the path meanwhile.
// libuv unlinks the path a Unix socket server was bound to when the server
// closes, whatever is there by then, and grpc-js closes its listeners as soon
// as shutdown begins. So the server is bound to a temp name in the same
// directory and the socket renamed onto its path; libuv only ever removes the
// temp name (long gone). When shutdown begins, the agent removes the path (so
// no new client reaches a draining agent, and a successor may bind at once) only
// while it still holds the socket it bound: same device, inode and ctime (an inode
// number can be reused once the old file is gone; its ctime cannot repeat).
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { logLine } from "./log.js";

export interface SocketIdentity {
  path: string;
  dev: bigint;
  ino: bigint;
  ctimeNs: bigint;
}

/** Longest Unix socket path (sun_path holds 108 bytes with the terminating NUL). */
const SUN_PATH_MAX = 107;

/** The socket file at `socketPath` now; undefined when there is none. */
export async function socketIdentity(socketPath: string): Promise<SocketIdentity | undefined> {
  try {
    const st = await fs.lstat(socketPath, { bigint: true });
    return st.isSocket() ? { path: socketPath, dev: st.dev, ino: st.ino, ctimeNs: st.ctimeNs } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Binds a server at `socketPath` (mode 0660) through a temp name, so that
 * closing the server never removes the path. `listen` binds the server to the
 * address it is given ("unix:/dir/name"). Returns what removeOwnSocket needs.
 */
export async function bindSocketFile(socketPath: string, listen: (address: string) => Promise<unknown>): Promise<SocketIdentity | undefined> {
  const temp = path.join(path.dirname(socketPath), `.bind-${randomBytes(4).toString("hex")}`);
  if (Buffer.byteLength(temp) > SUN_PATH_MAX) {
    // No room for a temp name: bind in place (closing the server will then remove the path).
    await listen(`unix:${socketPath}`);
    await fs.chmod(socketPath, 0o660);
    return socketIdentity(socketPath);
  }
  await listen(`unix:${temp}`);
  try {
    await fs.chmod(temp, 0o660);
    await fs.rename(temp, socketPath);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
  return socketIdentity(socketPath);
}

/** Removes the socket file if it is still the one `owned` describes; leaves anything else at the path alone. */
export async function removeOwnSocket(owned: SocketIdentity | undefined): Promise<void> {
  if (!owned) return;
  const now = await socketIdentity(owned.path);
  if (!now) return;
  if (now.dev !== owned.dev || now.ino !== owned.ino || now.ctimeNs !== owned.ctimeNs) {
    logLine(`${owned.path} is no longer the socket this agent bound; leaving it in place`);
    return;
  }
  await fs.unlink(owned.path).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  });
}
