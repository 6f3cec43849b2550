// The workspace state the orchestrator keeps in PostgreSQL (or embedded PGlite).
// Tables are described in README.md "State"; the SQL lives in host/store/migrations/.

export type ContainerStatus = "creating" | "running" | "stopped" | "error" | "deleting" | "deleted";

/** The cgroup limits a workspace runs with: all three, or none (the manager's defaults). */
export interface WorkspaceLimits {
  /** Memory limit in bytes (memory.max); swap is not granted on top. */
  memoryBytes: number;
  /** CPU quota in CPUs (0.5 = half of one CPU). */
  cpus: number;
  /** Maximum number of processes and threads (pids.max). */
  pids: number;
}

export interface ContainerRow {
  botId: string;
  containerId: string;
  containerName: string;
  image: string;
  status: ContainerStatus;
  namespace: string;
  autoStart: boolean;
  /** Host path of the bot's socket dir (or "tcp:<ip>:9090" for a legacy container). */
  containerPath: string;
  /** Fully-qualified CDI device names the container was created with (re-applied on rebuild). */
  cdiDevices: string[];
  /** Limits the container was created with; undefined for a row from before limits (the manager's defaults apply). */
  limits: WorkspaceLimits | undefined;
  /** How many times the kernel's OOM killer killed something in the workspace. */
  oomKills: number;
  lastOomAt: Date | undefined;
  createdAt: Date;
  updatedAt: Date;
  lastStartedAt: Date | null;
  lastStoppedAt: Date | null;
}

/**
 * A container row as written: the timestamps and the OOM count are the database's to set.
 * `limits` undefined stores none (the manager's defaults apply).
 */
export type UpsertContainer = Omit<ContainerRow, "createdAt" | "updatedAt" | "lastStartedAt" | "lastStoppedAt" | "limits" | "oomKills" | "lastOomAt"> & {
  limits?: WorkspaceLimits | undefined;
};

export interface SnapshotRow {
  id: number;
  containerId: string;
  runtimeSnapshotName: string;
  displayName: string;
  parent: string | null;
  snapshotter: string;
  /** "manual", "auto", "pre-restore", … */
  source: string;
  createdAt: Date;
}

export interface RecordVersion {
  containerId: string;
  runtimeSnapshotName: string;
  displayName: string;
  parent: string | null;
  snapshotter: string;
  /** "manual", "rollback", "pre_exec". */
  source: string;
  eventType: string;
  eventPayload: Record<string, unknown>;
}

export interface ContainerVersionRow {
  id: number;
  containerId: string;
  snapshotId: number;
  version: number;
  createdAt: Date;
}

export interface LifecycleEventRow {
  id: number;
  containerId: string;
  eventType: string;
  payload: Record<string, unknown>;
  createdAt: Date;
}

/** The queries the rest of the host uses; one implementation over pg, one over PGlite. */
export interface Store {
  /** "postgres" or "pglite". */
  readonly kind: "postgres" | "pglite";

  getContainerByBot(botId: string): Promise<ContainerRow | undefined>;
  getContainer(containerId: string): Promise<ContainerRow | undefined>;
  listContainers(filter?: { autoStart?: boolean; status?: ContainerStatus }): Promise<ContainerRow[]>;
  /**
   * Insert or replace the bot's row (unique on bot_id and on container_id). Replacing keeps the
   * OOM count and time: they belong to the bot's workspace, not to one container of it.
   */
  upsertContainer(row: UpsertContainer): Promise<ContainerRow>;
  /** Sets status (and last_started_at / last_stopped_at for running / stopped); records a lifecycle event in the same transaction. */
  setStatus(containerId: string, status: ContainerStatus, event?: { type: string; payload?: Record<string, unknown> }): Promise<void>;
  deleteContainer(containerId: string): Promise<void>;
  /** Sets the container's limits and records a `limits_changed` event (payload: from, to) in one transaction. */
  setLimits(containerId: string, limits: WorkspaceLimits, event?: { type?: string; payload?: Record<string, unknown> }): Promise<ContainerRow>;
  /** Counts an OOM kill (oom_kills + 1, last_oom_at = now) and records an `oom` event in one transaction; returns the new count. */
  recordOom(containerId: string, payload?: Record<string, unknown>): Promise<number>;

  recordEvent(containerId: string, eventType: string, payload?: Record<string, unknown>): Promise<void>;
  /** Newest first; `offset` skips that many. */
  listEvents(containerId: string, limit?: number, offset?: number): Promise<LifecycleEventRow[]>;
  /** Deletes all but the newest `keepPerContainer` events of every container; returns how many were deleted. */
  pruneEvents(keepPerContainer: number): Promise<number>;

  addSnapshot(row: Omit<SnapshotRow, "id" | "createdAt">): Promise<SnapshotRow>;
  listSnapshots(containerId: string): Promise<SnapshotRow[]>;
  deleteSnapshot(id: number): Promise<void>;
  /** Next version number for the container (max + 1), recorded with its snapshot in one transaction. */
  addVersion(containerId: string, snapshotId: number): Promise<ContainerVersionRow>;
  listVersions(containerId: string): Promise<ContainerVersionRow[]>;
  /**
   * A committed snapshot as the container's next version: its `snapshots` row, its
   * `container_versions` row (max + 1) and a lifecycle event, in one transaction.
   */
  recordVersion(input: RecordVersion): Promise<{ snapshot: SnapshotRow; version: ContainerVersionRow }>;
  /** Removes version `version` (its snapshot row stays until the snapshot itself is removed) and records `event`, in one transaction. */
  removeVersion(containerId: string, version: number, event: { type: string; payload?: Record<string, unknown> }): Promise<SnapshotRow | undefined>;

  close(): Promise<void>;
}
