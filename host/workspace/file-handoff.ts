// Opening, on the host, a file a workspace's agent handed off (ReadRaw with handoff):
// the agent opened it inside the workspace with ReadRaw's rules and names its
// descriptor; the host reaches the same open file through /proc/<agent pid>/fd/<fd>
// and reads it from the page cache itself (downloads: the bytes no longer cross the
// agent's socket; BENCHMARKS.md "Downloads by handoff").
//
// Nothing the agent says is trusted (the workspace may run anything in the agent's
// place): the host finds the agent's host pid itself, among the workspace task's init
// and its children, by the pid the agent reports in its own namespace; it opens the
// descriptor first with O_PATH, which opens nothing (no device's open runs, a FIFO does
// not block), and goes on only when that is a regular file on a disk or memory file
// system (no procfs or sysfs file, whose bytes may depend on who reads them) with the
// device and inode the agent reported. Only then is that same inode opened for reading
// through /proc/self/fd of the O_PATH descriptor. So the host reads nothing a
// workspace process did not already have open, and only regular files.
import fs from "node:fs";
import type { FileHandoff } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** open(2)'s O_PATH on Linux (node:fs has no constant for it). */
export const O_PATH = 0o10000000;

/**
 * File systems whose regular files hold bytes that do not depend on who reads them
 * (statfs f_type): overlay (a workspace's root), ext2/3/4, XFS, Btrfs, F2FS, ZFS, tmpfs.
 */
const DISK_FILE_SYSTEMS: ReadonlySet<number> = new Set([0x794c7630, 0xef53, 0x58465342, 0x9123683e, 0xf2f52010, 0x2fc12fc1, 0x01021994]);

export type Reopened = { fd: number } | { refused: string };

/** The pids of `pid`'s namespaces, outermost first (/proc/<pid>/status NSpid); undefined when it is gone. */
function nsPids(pid: number): number[] | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, "latin1");
  } catch {
    return undefined;
  }
  const line = /^NSpid:\s*(.*)$/m.exec(status);
  return line ? line[1]!.trim().split(/\s+/).map(Number) : [pid];
}

/** The children of a process's main thread; empty when it is gone. */
function childrenOf(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, "latin1")
      .trim()
      .split(/\s+/)
      .filter((s) => s !== "")
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The host pid of the process that is `nsPid` in the pid namespace of `initPid` (a
 * workspace task's init), looked for among the init and its children: where the agent
 * runs (tini's child, or the init itself).
 */
export function findInNamespace(initPid: number, nsPid: number): number | undefined {
  const init = nsPids(initPid);
  if (init === undefined || !Number.isSafeInteger(nsPid) || nsPid <= 0) return undefined;
  for (const candidate of [initPid, ...childrenOf(initPid)]) {
    const ns = candidate === initPid ? init : nsPids(candidate);
    if (ns !== undefined && ns.length === init.length && ns[ns.length - 1] === nsPid) return candidate;
  }
  return undefined;
}

/**
 * Opens for reading the file the agent of the workspace whose init is `initPid` handed
 * off, or says why not (the caller then streams the file through ReadRaw). The caller
 * closes the returned descriptor.
 */
export function reopenHandedOff(initPid: number, handoff: FileHandoff): Reopened {
  const agentPid = findInNamespace(initPid, handoff.pid);
  if (agentPid === undefined) return { refused: `no process ${handoff.pid} among the workspace init's (${initPid}) and its children` };
  let path: number;
  try {
    path = fs.openSync(`/proc/${agentPid}/fd/${handoff.fd}`, O_PATH);
  } catch (err) {
    return { refused: `cannot reach descriptor ${handoff.fd} of pid ${agentPid}: ${(err as Error).message}` };
  }
  try {
    const st = fs.fstatSync(path, { bigint: true });
    if (!st.isFile()) return { refused: `descriptor ${handoff.fd} of pid ${agentPid} is not a regular file` };
    if (st.dev !== handoff.dev || st.ino !== handoff.ino) return { refused: `descriptor ${handoff.fd} of pid ${agentPid} is another file than the agent named` };
    const type = fs.statfsSync(`/proc/self/fd/${path}`).type;
    if (!DISK_FILE_SYSTEMS.has(type)) return { refused: `the file is on a file system of type 0x${type.toString(16)}, not a disk or memory file system` };
    // Through the O_PATH descriptor: the inode just checked, whatever the agent's fd table holds now.
    return { fd: fs.openSync(`/proc/self/fd/${path}`, fs.constants.O_RDONLY | fs.constants.O_NOCTTY) };
  } catch (err) {
    return { refused: `cannot open the handed-off file: ${(err as Error).message}` };
  } finally {
    fs.closeSync(path);
  }
}
