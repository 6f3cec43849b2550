// Database rows (snake_case columns, driver types) mapped to the store's types, checked on the way.
import type { ContainerRow, ContainerStatus, ContainerVersionRow, LifecycleEventRow, SnapshotRow, WorkspaceLimits } from "./types.js";
import { StoreError } from "./errors.js";

const STATUSES: readonly ContainerStatus[] = ["creating", "running", "stopped", "error", "deleting", "deleted"];

function toDate(v: unknown): Date {
  return v instanceof Date ? v : new Date(String(v));
}

function toDateOrNull(v: unknown): Date | null {
  return v === null || v === undefined ? null : toDate(v);
}

export interface ContainerDbRow {
  bot_id: string;
  container_id: string;
  container_name: string;
  image: string;
  status: string;
  namespace: string;
  auto_start: boolean;
  container_path: string;
  cdi_devices: unknown;
  memory_limit_bytes: unknown;
  cpu_limit: unknown;
  pids_limit: unknown;
  oom_kills: unknown;
  last_oom_at: unknown;
  created_at: unknown;
  updated_at: unknown;
  last_started_at: unknown;
  last_stopped_at: unknown;
}

function toStatus(v: string): ContainerStatus {
  if ((STATUSES as readonly string[]).includes(v)) return v as ContainerStatus;
  throw new StoreError("invalid", `unknown container status ${JSON.stringify(v)} in the database`);
}

function toStringArray(v: unknown): string[] {
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v;
  throw new StoreError("invalid", `expected a text[] in the database, got ${JSON.stringify(v)}`);
}

/**
 * A bigint or integer column as a number: pg returns int8 as a string (it may exceed 2^53),
 * PGlite as a number or a bigint. A value past Number.MAX_SAFE_INTEGER is refused, not rounded.
 */
export function toSafeInteger(v: unknown, column: string): number {
  const n = typeof v === "string" && /^-?\d+$/.test(v) ? Number(v) : typeof v === "bigint" ? Number(v) : v;
  if (typeof n === "number" && Number.isSafeInteger(n)) return n;
  throw new StoreError("invalid", `${column}: expected an integer the program can represent exactly, got ${String(v)}`);
}

export function toLimits(r: ContainerDbRow): WorkspaceLimits | undefined {
  if (r.memory_limit_bytes === null && r.cpu_limit === null && r.pids_limit === null) return undefined;
  const cpus = typeof r.cpu_limit === "string" ? Number(r.cpu_limit) : r.cpu_limit;
  if (typeof cpus !== "number" || !Number.isFinite(cpus)) throw new StoreError("invalid", `cpu_limit: expected a number, got ${String(r.cpu_limit)}`);
  return {
    memoryBytes: toSafeInteger(r.memory_limit_bytes, "memory_limit_bytes"),
    cpus,
    pids: toSafeInteger(r.pids_limit, "pids_limit"),
  };
}

const MAX_INT4 = 2 ** 31 - 1;

/** Why limits cannot be stored, or undefined when they can (the table's CHECK says the same, later). */
export function checkLimits(limits: unknown): string | undefined {
  if (typeof limits !== "object" || limits === null) return "limits must be an object { memoryBytes, cpus, pids }";
  const { memoryBytes, cpus, pids } = limits as Record<string, unknown>;
  if (typeof memoryBytes !== "number" || !Number.isSafeInteger(memoryBytes) || memoryBytes <= 0) {
    return `memoryBytes must be a positive integer, got ${String(memoryBytes)}`;
  }
  if (typeof cpus !== "number" || !Number.isFinite(cpus) || cpus <= 0) return `cpus must be a positive number, got ${String(cpus)}`;
  if (typeof pids !== "number" || !Number.isInteger(pids) || pids <= 0 || pids > MAX_INT4) {
    return `pids must be a positive integer up to ${MAX_INT4}, got ${String(pids)}`;
  }
  return undefined;
}

export function mapContainer(r: ContainerDbRow): ContainerRow {
  return {
    botId: r.bot_id,
    containerId: r.container_id,
    containerName: r.container_name,
    image: r.image,
    status: toStatus(r.status),
    namespace: r.namespace,
    autoStart: r.auto_start,
    containerPath: r.container_path,
    cdiDevices: toStringArray(r.cdi_devices),
    limits: toLimits(r),
    oomKills: toSafeInteger(r.oom_kills, "oom_kills"),
    lastOomAt: r.last_oom_at === null || r.last_oom_at === undefined ? undefined : toDate(r.last_oom_at),
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
    lastStartedAt: toDateOrNull(r.last_started_at),
    lastStoppedAt: toDateOrNull(r.last_stopped_at),
  };
}

export interface SnapshotDbRow {
  id: unknown;
  container_id: string;
  runtime_snapshot_name: string;
  display_name: string;
  parent: string | null;
  snapshotter: string;
  source: string;
  created_at: unknown;
}

export function mapSnapshot(r: SnapshotDbRow): SnapshotRow {
  return {
    id: Number(r.id),
    containerId: r.container_id,
    runtimeSnapshotName: r.runtime_snapshot_name,
    displayName: r.display_name,
    parent: r.parent,
    snapshotter: r.snapshotter,
    source: r.source,
    createdAt: toDate(r.created_at),
  };
}

export interface VersionDbRow {
  id: unknown;
  container_id: string;
  snapshot_id: unknown;
  version: unknown;
  created_at: unknown;
}

export function mapVersion(r: VersionDbRow): ContainerVersionRow {
  return {
    id: Number(r.id),
    containerId: r.container_id,
    snapshotId: Number(r.snapshot_id),
    version: Number(r.version),
    createdAt: toDate(r.created_at),
  };
}

export interface EventDbRow {
  id: unknown;
  container_id: string;
  event_type: string;
  payload: unknown;
  created_at: unknown;
}

function toPayload(v: unknown): Record<string, unknown> {
  const value = typeof v === "string" ? (JSON.parse(v) as unknown) : v;
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  return { value };
}

export function mapEvent(r: EventDbRow): LifecycleEventRow {
  return {
    id: Number(r.id),
    containerId: r.container_id,
    eventType: r.event_type,
    payload: toPayload(r.payload),
    createdAt: toDate(r.created_at),
  };
}
