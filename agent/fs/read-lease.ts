// Opening a file for a read together with its lease from a budget, without
// ever holding a file descriptor while waiting for the lease: a request that
// must wait closes the file, waits, and opens it again. Hundreds of requests
// queued for the budget then hold no fds (the agent's fds stay bounded by the
// connection and stream limits, not by the queue).
import type { Stats } from "node:fs";
import type { ByteBudget, Lease } from "../budget.js";
import type { FsPath } from "../paths.js";
import { openRegularFile, type OpenedFile } from "./open.js";

export interface LeasedFile extends OpenedFile {
  lease: Lease;
}

/**
 * Opens `target` (a regular file) and leases `need(st)` bytes for it. `need`
 * may throw (a file too large) and is asked again after every open, since the
 * file may change while the request waits. `signal` is asked for only when the
 * request has to wait (an AbortSignal per call costs more than a small read).
 */
export async function openLeased(
  budget: ByteBudget,
  target: FsPath,
  rpc: "ReadFile" | "ReadRaw",
  need: (st: Stats) => number,
  signal: () => AbortSignal | undefined,
): Promise<LeasedFile> {
  let opened = await openRegularFile(target, rpc);
  let waited: Lease | undefined;
  try {
    for (;;) {
      const bytes = need(opened.st);
      if (waited && waited.bytes >= bytes) return { ...opened, lease: waited };
      waited?.release();
      waited = undefined;
      const now = budget.tryAcquire(bytes);
      if (now) return { ...opened, lease: now };
      opened.fh.close();
      waited = await budget.acquire(bytes, `${rpc} of ${opened.abs}`, signal());
      opened = await openRegularFile(target, rpc);
    }
  } catch (err) {
    waited?.release();
    opened.fh.close();
    throw err;
  }
}

/**
 * A lease of `bytes` for a file already open: at once when free, else the file
 * is closed while the request waits and opened again. Returns the handle to use
 * from now on, or undefined (lease released, file closed) when the file is no
 * longer the one that was open: the caller starts over.
 */
export async function leaseForOpen(
  budget: ByteBudget,
  target: FsPath,
  rpc: "ReadFile" | "ReadRaw",
  opened: OpenedFile,
  bytes: number,
  signal: () => AbortSignal | undefined,
): Promise<LeasedFile | undefined> {
  const now = budget.tryAcquire(bytes);
  if (now) return { ...opened, lease: now };
  opened.fh.close();
  const lease = await budget.acquire(bytes, `${rpc} of ${opened.abs}`, signal());
  let again: OpenedFile;
  try {
    again = await openRegularFile(target, rpc);
  } catch (err) {
    lease.release();
    throw err;
  }
  if (sameContent(opened.st, again.st)) return { ...again, lease };
  lease.release();
  again.fh.close();
  return undefined;
}

/** The same file, not changed since (as far as its metadata tells). */
function sameContent(a: Stats, b: Stats): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}
