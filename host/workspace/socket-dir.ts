// A workspace's socket dir (`<dataRoot>/run/<bot>`, /run/memoh inside the workspace) on a
// small tmpfs of its own. The workspace must be able to write there (its agent creates
// bridge.sock), and everything in it can: on the data root's own file system, a
// `dd of=/run/memoh/fill` inside one workspace would fill the file system that holds the
// database, the backups and every other workspace's sockets. On a tmpfs of
// SOCKET_DIR_BYTES and SOCKET_DIR_INODES it fills that tmpfs and nothing else.
//
// Mounted afresh before each task is created (the container binds whatever is at the
// path then) and unmounted when the workspace is deleted. A task that already runs keeps
// the dir it was started with. The orchestrator must share containerd's mount namespace
// (as a plain service does): a mount only it could see would leave the agent's socket
// beneath it. Where the orchestrator may not mount (no CAP_SYS_ADMIN), the plain
// directory is used and the failure is logged.
import { execFile } from "node:child_process";
import fs from "node:fs";
import { promisify } from "node:util";
import { unmount } from "../containerd/snapshots.js";

const run = promisify(execFile);

/** Room of a socket dir: the socket is an inode without data; what else lands there is a workspace's misuse. */
export const SOCKET_DIR_BYTES = 256 * 1024;
export const SOCKET_DIR_INODES = 64;
const FS_NAME = "memoh-socket";

/**
 * Makes `dir` (0750) and mounts a fresh socket tmpfs on it: one an earlier task used is
 * let go first, so nothing that task left there (files, links to its socket holding
 * inodes) can fill the new one. Only while no task of the workspace runs.
 */
export async function mountSocketDir(dir: string, log: (msg: string) => void): Promise<void> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
  await unmount(dir, { lazy: true });
  try {
    await run("mount", ["-t", "tmpfs", "-o", `size=${SOCKET_DIR_BYTES},nr_inodes=${SOCKET_DIR_INODES},mode=0750,nosuid,nodev,noexec`, FS_NAME, dir]);
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    log(`${dir}: cannot mount its tmpfs (${(e.stderr || e.message || String(err)).trim()}); the socket dir shares the data root's file system`);
    fs.chmodSync(dir, 0o750);
  }
}

/** Unmounts every mount on `dir` (a socket tmpfs, maybe stacked) and removes it. */
export async function removeSocketDir(dir: string): Promise<void> {
  // Lazy: a host process may still hold the socket open; the mount goes when it lets go.
  await unmount(dir, { lazy: true });
  fs.rmSync(dir, { recursive: true, force: true });
}
