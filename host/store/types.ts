// The workspace state the orchestrator keeps in PostgreSQL (or embedded PGlite).
// Tables follow DESIGN.md "Database"; the SQL lives in host/store/migrations/.

export type ContainerStatus = "creating" | "running" | "stopped" | "error" | "deleting" | "deleted";

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
  createdAt: Date;
  updatedAt: Date;
  lastStartedAt: Date | null;
  lastStoppedAt: Date | null;
}

/** A container row as written: the timestamps are the database's to set. */
export type UpsertContainer = Omit<ContainerRow, "createdAt" | "updatedAt" | "lastStartedAt" | "lastStoppedAt">;

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
  /** Insert or replace the bot's row (unique on bot_id and on container_id). */
  upsertContainer(row: UpsertContainer): Promise<ContainerRow>;
  /** Sets status (and last_started_at / last_stopped_at for running / stopped); records a lifecycle event in the same transaction. */
  setStatus(containerId: string, status: ContainerStatus, event?: { type: string; payload?: Record<string, unknown> }): Promise<void>;
  deleteContainer(containerId: string): Promise<void>;

  recordEvent(containerId: string, eventType: string, payload?: Record<string, unknown>): Promise<void>;
  listEvents(containerId: string, limit?: number): Promise<LifecycleEventRow[]>;

  addSnapshot(row: Omit<SnapshotRow, "id" | "createdAt">): Promise<SnapshotRow>;
  listSnapshots(containerId: string): Promise<SnapshotRow[]>;
  deleteSnapshot(id: number): Promise<void>;
  /** Next version number for the container (max + 1), recorded with its snapshot in one transaction. */
  addVersion(containerId: string, snapshotId: number): Promise<ContainerVersionRow>;
  listVersions(containerId: string): Promise<ContainerVersionRow[]>;

  close(): Promise<void>;
}
