// Leases: what is created under a lease survives GC until the lease is deleted.
// Deleting a lease with `sync` runs a garbage collection before it returns, which
// is also the one reliable way to trigger GC from a client (containerd 1.6).
import { randomBytes } from "node:crypto";
import { Leases } from "../../proto/gen/containerd/services/leases/v1/leases_pb.js";
import type { ContainerdConnection } from "./connection.js";
import { isNotFound } from "./errors.js";

/** containerd's label for a lease that the GC deletes once the time has passed. */
export const LEASE_EXPIRE_LABEL = "containerd.io/gc.expire";

export interface LeaseInfo {
  id: string;
  createdAt: Date | undefined;
  labels: Record<string, string>;
}

export interface CreateLeaseOptions {
  /** Default: `memoh-<random>`. */
  id?: string;
  labels?: Record<string, string>;
  /** The lease expires (and what only it protects may be collected) after this long. */
  expiresInMs?: number;
}

export async function createLease(conn: ContainerdConnection, opts: CreateLeaseOptions = {}): Promise<LeaseInfo> {
  const id = opts.id ?? `memoh-${randomBytes(6).toString("hex")}`;
  const labels = { ...opts.labels };
  if (opts.expiresInMs !== undefined) labels[LEASE_EXPIRE_LABEL] = new Date(Date.now() + opts.expiresInMs).toISOString();
  const res = await conn.unary(Leases.method.create, { id, labels });
  return toLeaseInfo(res.lease ?? { id, labels, createdAt: undefined });
}

/** Deletes a lease; with `sync` (default true) the GC has run when this resolves. */
export async function deleteLease(conn: ContainerdConnection, id: string, opts: { sync?: boolean; ignoreNotFound?: boolean } = {}): Promise<void> {
  try {
    await conn.unary(Leases.method.delete, { id, sync: opts.sync ?? true });
  } catch (err) {
    if (!(opts.ignoreNotFound && isNotFound(err))) throw err;
  }
}

/** Lists leases; filters use containerd's syntax, e.g. `labels."memoh.purpose"==pull`. */
export async function listLeases(conn: ContainerdConnection, filters: string[] = []): Promise<LeaseInfo[]> {
  const res = await conn.unary(Leases.method.list, { filters });
  return res.leases.map(toLeaseInfo);
}

/** Runs a synchronous garbage collection (through a throwaway lease). */
export async function collectGarbage(conn: ContainerdConnection): Promise<void> {
  const lease = await createLease(conn, { labels: { "memoh.purpose": "gc-trigger" } });
  await deleteLease(conn, lease.id, { sync: true });
}

/**
 * Runs fn under a fresh lease and deletes the lease afterwards (also on failure),
 * so whatever fn created is safe from GC while fn runs and is only kept when it
 * has a reference of its own by then (a container, an image, a gc.root label).
 */
export async function withLease<T>(conn: ContainerdConnection, fn: (leaseId: string) => Promise<T>, opts: CreateLeaseOptions & { syncDelete?: boolean } = {}): Promise<T> {
  const lease = await createLease(conn, { expiresInMs: 60 * 60_000, ...opts });
  try {
    return await fn(lease.id);
  } finally {
    await deleteLease(conn, lease.id, { sync: opts.syncDelete ?? false, ignoreNotFound: true });
  }
}

function toLeaseInfo(l: { id: string; labels: Record<string, string>; createdAt?: { seconds: bigint; nanos: number } | undefined }): LeaseInfo {
  return {
    id: l.id,
    labels: { ...l.labels },
    createdAt: l.createdAt ? new Date(Number(l.createdAt.seconds) * 1000 + Math.floor(l.createdAt.nanos / 1e6)) : undefined,
  };
}
