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
// device and inode the agent reported (which tells an fd number reused for another file
// from the one named; it does not make the agent's word more than that). Only then is
// that same inode opened for reading through /proc/self/fd of the O_PATH descriptor. So
// the host reads nothing a workspace process did not already have open, and only
// regular files. The process is looked up through its /proc directory opened first, so
// a pid reused meanwhile by another process (another workspace's) reaches nothing.
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

/** NSpid (the pids of the process's namespaces, outermost first) and PPid of the process whose /proc directory `dir` is open. */
function statusAt(dir: number): { nsPids: number[]; ppid: number } | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/self/fd/${dir}/status`, "latin1");
  } catch {
    return undefined; // the process is gone (lookups under its directory fail from then on)
  }
  const ns = /^NSpid:\s*(.*)$/m.exec(status);
  const ppid = /^PPid:\s*(\d+)$/m.exec(status);
  return { nsPids: ns ? ns[1]!.trim().split(/\s+/).map(Number) : [], ppid: ppid ? Number(ppid[1]) : 0 };
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

/** /proc/<pid> opened as a directory (O_PATH): what is looked up through it is that process's, never a later one's with the same pid. */
function openProcDir(pid: number): number | undefined {
  try {
    return fs.openSync(`/proc/${pid}`, O_PATH | fs.constants.O_DIRECTORY);
  } catch {
    return undefined;
  }
}

/**
 * The process that is `nsPid` in the pid namespace of `initPid` (a workspace task's
 * init), looked for among the init and its children (where the agent runs: tini's
 * child, or the init itself): its host pid and its /proc directory, open (the caller
 * closes `dir`). A child counts only while its parent is the init and its NSpid has the
 * init's depth, both read through the open directory.
 */
export function openInNamespace(initPid: number, nsPid: number): { pid: number; dir: number } | undefined {
  if (!Number.isSafeInteger(nsPid) || nsPid <= 0) return undefined;
  const initDir = openProcDir(initPid);
  if (initDir === undefined) return undefined;
  const init = statusAt(initDir);
  if (init === undefined || init.nsPids.length === 0) {
    fs.closeSync(initDir);
    return undefined;
  }
  if (init.nsPids[init.nsPids.length - 1] === nsPid) return { pid: initPid, dir: initDir };
  fs.closeSync(initDir);
  for (const child of childrenOf(initPid)) {
    const dir = openProcDir(child);
    if (dir === undefined) continue;
    const st = statusAt(dir);
    if (st !== undefined && st.ppid === initPid && st.nsPids.length === init.nsPids.length && st.nsPids[st.nsPids.length - 1] === nsPid) return { pid: child, dir };
    fs.closeSync(dir);
  }
  return undefined;
}

/** The host pid of `nsPid` in the init's namespace (openInNamespace), or undefined. */
export function findInNamespace(initPid: number, nsPid: number): number | undefined {
  const found = openInNamespace(initPid, nsPid);
  if (found === undefined) return undefined;
  fs.closeSync(found.dir);
  return found.pid;
}

/**
 * Opens for reading the file the agent of the workspace whose init is `initPid` handed
 * off, or says why not (the caller then streams the file through ReadRaw). The caller
 * closes the returned descriptor.
 */
export function reopenHandedOff(initPid: number, handoff: FileHandoff): Reopened {
  const agent = openInNamespace(initPid, handoff.pid);
  if (agent === undefined) return { refused: `no process ${handoff.pid} among the workspace init's (${initPid}) and its children` };
  let path: number;
  try {
    path = fs.openSync(`/proc/self/fd/${agent.dir}/fd/${handoff.fd}`, O_PATH);
  } catch (err) {
    return { refused: `cannot reach descriptor ${handoff.fd} of pid ${agent.pid}: ${(err as Error).message}` };
  } finally {
    fs.closeSync(agent.dir);
  }
  try {
    const st = fs.fstatSync(path, { bigint: true });
    if (!st.isFile()) return { refused: `descriptor ${handoff.fd} of pid ${agent.pid} is not a regular file` };
    if (st.dev !== handoff.dev || st.ino !== handoff.ino) return { refused: `descriptor ${handoff.fd} of pid ${agent.pid} is another file than the agent named` };
    const type = fs.statfsSync(`/proc/self/fd/${path}`).type;
    if (!DISK_FILE_SYSTEMS.has(type)) return { refused: `the file is on a file system of type 0x${type.toString(16)}, not a disk or memory file system` };
    // Through the O_PATH descriptor: the inode just checked, whatever the agent's fd table
    // holds now. O_NONBLOCK: a file under a lease (fcntl F_SETLEASE, which its owner in the
    // workspace may take) would otherwise hold this open, and the server's event loop with
    // it, until the lease is broken (45 s by default); it fails with EWOULDBLOCK instead.
    return { fd: fs.openSync(`/proc/self/fd/${path}`, fs.constants.O_RDONLY | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK) };
  } catch (err) {
    return { refused: `cannot open the handed-off file: ${(err as Error).message}` };
  } finally {
    fs.closeSync(path);
  }
}
