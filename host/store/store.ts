// The Store over either backend: same SQL, rows mapped to camelCase types.
import path from "node:path";
import { openPglite, openPostgres, type Db } from "./db.js";
import { migrate, type Migration } from "./migrate.js";
import { TokenStore } from "./tokens.js";
import type {
  ContainerRow,
  ContainerStatus,
  ContainerVersionRow,
  LifecycleEventRow,
  RecordVersion,
  SnapshotRow,
  Store,
  UpsertContainer,
  WorkspaceLimits,
} from "./types.js";
import { StoreError, guard } from "./errors.js";
import {
  checkLimits,
  mapContainer,
  mapEvent,
  mapSnapshot,
  mapVersion,
  toLimits,
  toSafeInteger,
  type ContainerDbRow,
  type EventDbRow,
  type SnapshotDbRow,
  type VersionDbRow,
} from "./rows.js";

export { StoreError, type StoreErrorCode } from "./errors.js";
export { checkLimits } from "./rows.js";

const CONTAINER_COLUMNS =
  "bot_id, container_id, container_name, image, status, namespace, auto_start, container_path, cdi_devices, " +
  "memory_limit_bytes, cpu_limit, pids_limit, oom_kills, last_oom_at, created_at, updated_at, last_started_at, last_stopped_at";
const SNAPSHOT_COLUMNS = "id, container_id, runtime_snapshot_name, display_name, parent, snapshotter, source, created_at";
const VERSION_COLUMNS = "id, container_id, snapshot_id, version, created_at";
const EVENT_COLUMNS = "id, container_id, event_type, payload, created_at";

async function insertEvent(db: Db, containerId: string, eventType: string, payload: Record<string, unknown>): Promise<void> {
  await db.query("INSERT INTO lifecycle_events (container_id, event_type, payload) VALUES ($1, $2, $3::jsonb)", [
    containerId,
    eventType,
    JSON.stringify(payload),
  ]);
}

export class SqlStore implements Store {
  readonly kind: "postgres" | "pglite";

  /** API tokens (host/store/tokens.ts). */
  readonly tokens: TokenStore;

  constructor(readonly db: Db) {
    this.kind = db.kind;
    this.tokens = new TokenStore(db);
  }

  async getContainerByBot(botId: string): Promise<ContainerRow | undefined> {
    const { rows } = await this.db.query<ContainerDbRow>(`SELECT ${CONTAINER_COLUMNS} FROM containers WHERE bot_id = $1`, [botId]);
    return rows[0] ? mapContainer(rows[0]) : undefined;
  }

  async getContainer(containerId: string): Promise<ContainerRow | undefined> {
    const { rows } = await this.db.query<ContainerDbRow>(`SELECT ${CONTAINER_COLUMNS} FROM containers WHERE container_id = $1`, [
      containerId,
    ]);
    return rows[0] ? mapContainer(rows[0]) : undefined;
  }

  async listContainers(filter: { autoStart?: boolean; status?: ContainerStatus } = {}): Promise<ContainerRow[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.autoStart !== undefined) {
      params.push(filter.autoStart);
      where.push(`auto_start = $${params.length}`);
    }
    if (filter.status !== undefined) {
      params.push(filter.status);
      where.push(`status = $${params.length}`);
    }
    const clause = where.length ? ` WHERE ${where.join(" AND ")}` : "";
    const { rows } = await this.db.query<ContainerDbRow>(`SELECT ${CONTAINER_COLUMNS} FROM containers${clause} ORDER BY bot_id`, params);
    return rows.map(mapContainer);
  }

  upsertContainer(row: UpsertContainer): Promise<ContainerRow> {
    const what = `container ${row.containerId} for bot ${row.botId}`;
    return guard(what, async () => {
      const limits = row.limits;
      if (limits !== undefined) {
        const problem = checkLimits(limits);
        if (problem) throw new StoreError("invalid", `${what}: ${problem}`);
      }
      const { rows } = await this.db.query<ContainerDbRow>(
        `INSERT INTO containers (bot_id, container_id, container_name, image, status, namespace, auto_start, container_path, cdi_devices,
                                 memory_limit_bytes, cpu_limit, pids_limit)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text[], $10::bigint, $11::double precision, $12::integer)
         ON CONFLICT (bot_id) DO UPDATE SET
           container_id = EXCLUDED.container_id,
           container_name = EXCLUDED.container_name,
           image = EXCLUDED.image,
           status = EXCLUDED.status,
           namespace = EXCLUDED.namespace,
           auto_start = EXCLUDED.auto_start,
           container_path = EXCLUDED.container_path,
           cdi_devices = EXCLUDED.cdi_devices,
           memory_limit_bytes = EXCLUDED.memory_limit_bytes,
           cpu_limit = EXCLUDED.cpu_limit,
           pids_limit = EXCLUDED.pids_limit,
           updated_at = now()
         RETURNING ${CONTAINER_COLUMNS}`,
        [
          row.botId,
          row.containerId,
          row.containerName,
          row.image,
          row.status,
          row.namespace,
          row.autoStart,
          row.containerPath,
          row.cdiDevices,
          limits === undefined ? null : String(limits.memoryBytes),
          limits?.cpus ?? null,
          limits?.pids ?? null,
        ],
      );
      return mapContainer(rows[0]!);
    });
  }

  setStatus(
    containerId: string,
    status: ContainerStatus,
    event?: { type: string; payload?: Record<string, unknown> },
  ): Promise<void> {
    return guard(`status of container ${containerId}`, () =>
      this.db.transaction(async (tx) => {
        const before = await tx.query<{ status: string }>("SELECT status FROM containers WHERE container_id = $1 FOR UPDATE", [
          containerId,
        ]);
        if (!before.rows[0]) throw new StoreError("not_found", `container ${containerId} is not in the database`);
        await tx.query(
          `UPDATE containers SET
             status = $2,
             updated_at = now(),
             last_started_at = CASE WHEN $2 = 'running' THEN now() ELSE last_started_at END,
             last_stopped_at = CASE WHEN $2 = 'stopped' THEN now() ELSE last_stopped_at END
           WHERE container_id = $1`,
          [containerId, status],
        );
        await insertEvent(tx, containerId, event?.type ?? "status", { ...event?.payload, from: before.rows[0].status, to: status });
      }),
    );
  }

  async deleteContainer(containerId: string): Promise<void> {
    await this.db.query("DELETE FROM containers WHERE container_id = $1", [containerId]);
  }

  setLimits(containerId: string, limits: WorkspaceLimits, event?: { type?: string; payload?: Record<string, unknown> }): Promise<ContainerRow> {
    const what = `limits of container ${containerId}`;
    return guard(what, async () => {
      const problem = checkLimits(limits);
      if (problem) throw new StoreError("invalid", `${what}: ${problem}`);
      return this.db.transaction(async (tx) => {
        const before = await tx.query<ContainerDbRow>(`SELECT ${CONTAINER_COLUMNS} FROM containers WHERE container_id = $1 FOR UPDATE`, [
          containerId,
        ]);
        if (!before.rows[0]) throw new StoreError("not_found", `container ${containerId} is not in the database`);
        const from = toLimits(before.rows[0]) ?? null;
        const { rows } = await tx.query<ContainerDbRow>(
          `UPDATE containers SET
             memory_limit_bytes = $2::bigint, cpu_limit = $3::double precision, pids_limit = $4::integer, updated_at = now()
           WHERE container_id = $1
           RETURNING ${CONTAINER_COLUMNS}`,
          [containerId, String(limits.memoryBytes), limits.cpus, limits.pids],
        );
        const to = { memoryBytes: limits.memoryBytes, cpus: limits.cpus, pids: limits.pids };
        await insertEvent(tx, containerId, event?.type ?? "limits_changed", { ...event?.payload, from, to });
        return mapContainer(rows[0]!);
      });
    });
  }

  recordOom(containerId: string, payload: Record<string, unknown> = {}): Promise<number> {
    return guard(`OOM kill of container ${containerId}`, () =>
      this.db.transaction(async (tx) => {
        // One UPDATE reads and writes the count under the row lock: concurrent calls queue
        // on it and none is lost.
        const { rows } = await tx.query<{ oom_kills: unknown }>(
          "UPDATE containers SET oom_kills = oom_kills + 1, last_oom_at = now() WHERE container_id = $1 RETURNING oom_kills",
          [containerId],
        );
        if (!rows[0]) throw new StoreError("not_found", `container ${containerId} is not in the database`);
        const oomKills = toSafeInteger(rows[0].oom_kills, "oom_kills");
        await insertEvent(tx, containerId, "oom", { ...payload, oomKills });
        return oomKills;
      }),
    );
  }

  async recordEvent(containerId: string, eventType: string, payload: Record<string, unknown> = {}): Promise<void> {
    await insertEvent(this.db, containerId, eventType, payload);
  }

  async listEvents(containerId: string, limit = 100, offset = 0): Promise<LifecycleEventRow[]> {
    const { rows } = await this.db.query<EventDbRow>(
      `SELECT ${EVENT_COLUMNS} FROM lifecycle_events WHERE container_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3`,
      [containerId, Math.max(1, Math.floor(limit)), Math.max(0, Math.floor(offset))],
    );
    return rows.map(mapEvent);
  }

  async pruneEvents(keepPerContainer: number): Promise<number> {
    if (!Number.isSafeInteger(keepPerContainer) || keepPerContainer < 0) {
      throw new StoreError("invalid", `pruneEvents: keepPerContainer must be a non-negative integer, got ${String(keepPerContainer)}`);
    }
    // Every step walks lifecycle_events_container_idx (container_id, created_at DESC, id DESC):
    // the recursive part jumps from one container_id to the next (one index probe each, instead
    // of reading every row to find the distinct ids), and for each container the lateral part
    // skips its newest N entries in index order and returns the ids after them.
    const { rowCount } = await this.db.query(
      `WITH RECURSIVE containers_with_events AS (
         (SELECT container_id FROM lifecycle_events ORDER BY container_id LIMIT 1)
         UNION ALL
         SELECT (SELECT e.container_id FROM lifecycle_events e WHERE e.container_id > c.container_id ORDER BY e.container_id LIMIT 1)
         FROM containers_with_events c
         WHERE c.container_id IS NOT NULL
       )
       DELETE FROM lifecycle_events
       WHERE id IN (
         SELECT old.id
         FROM containers_with_events c
         CROSS JOIN LATERAL (
           SELECT e.id FROM lifecycle_events e
           WHERE e.container_id = c.container_id
           ORDER BY e.created_at DESC, e.id DESC
           OFFSET $1
         ) old
         WHERE c.container_id IS NOT NULL
       )`,
      [keepPerContainer],
    );
    return rowCount;
  }

  addSnapshot(row: Omit<SnapshotRow, "id" | "createdAt">): Promise<SnapshotRow> {
    return guard(`snapshot ${row.runtimeSnapshotName} of container ${row.containerId}`, async () => {
      const { rows } = await this.db.query<SnapshotDbRow>(
        `INSERT INTO snapshots (container_id, runtime_snapshot_name, display_name, parent, snapshotter, source)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${SNAPSHOT_COLUMNS}`,
        [row.containerId, row.runtimeSnapshotName, row.displayName, row.parent, row.snapshotter, row.source],
      );
      return mapSnapshot(rows[0]!);
    });
  }

  async listSnapshots(containerId: string): Promise<SnapshotRow[]> {
    const { rows } = await this.db.query<SnapshotDbRow>(
      `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots WHERE container_id = $1 ORDER BY created_at, id`,
      [containerId],
    );
    return rows.map(mapSnapshot);
  }

  async deleteSnapshot(id: number): Promise<void> {
    await this.db.query("DELETE FROM snapshots WHERE id = $1", [id]);
  }

  addVersion(containerId: string, snapshotId: number): Promise<ContainerVersionRow> {
    return guard(`version of container ${containerId}`, () =>
      this.db.transaction(async (tx) => {
        // Locking the container row serialises concurrent addVersion calls, so
        // each sees the previous one's version once it holds the lock.
        const owner = await tx.query("SELECT 1 FROM containers WHERE container_id = $1 FOR UPDATE", [containerId]);
        if (!owner.rows[0]) throw new StoreError("not_found", `container ${containerId} is not in the database`);
        const snap = await tx.query<{ container_id: string }>("SELECT container_id FROM snapshots WHERE id = $1", [snapshotId]);
        if (!snap.rows[0]) throw new StoreError("not_found", `snapshot ${snapshotId} is not in the database`);
        if (snap.rows[0].container_id !== containerId) {
          throw new StoreError("invalid", `snapshot ${snapshotId} belongs to container ${snap.rows[0].container_id}, not ${containerId}`);
        }
        const { rows } = await tx.query<VersionDbRow>(
          `INSERT INTO container_versions (container_id, snapshot_id, version)
           SELECT $1, $2, COALESCE(MAX(version), 0) + 1 FROM container_versions WHERE container_id = $1
           RETURNING ${VERSION_COLUMNS}`,
          [containerId, snapshotId],
        );
        return mapVersion(rows[0]!);
      }),
    );
  }

  recordVersion(input: RecordVersion): Promise<{ snapshot: SnapshotRow; version: ContainerVersionRow }> {
    const { containerId } = input;
    return guard(`version of container ${containerId} (${input.runtimeSnapshotName})`, () =>
      this.db.transaction(async (tx) => {
        const owner = await tx.query("SELECT 1 FROM containers WHERE container_id = $1 FOR UPDATE", [containerId]);
        if (!owner.rows[0]) throw new StoreError("not_found", `container ${containerId} is not in the database`);
        const snap = await tx.query<SnapshotDbRow>(
          `INSERT INTO snapshots (container_id, runtime_snapshot_name, display_name, parent, snapshotter, source)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${SNAPSHOT_COLUMNS}`,
          [containerId, input.runtimeSnapshotName, input.displayName, input.parent, input.snapshotter, input.source],
        );
        const snapshot = mapSnapshot(snap.rows[0]!);
        const ver = await tx.query<VersionDbRow>(
          `INSERT INTO container_versions (container_id, snapshot_id, version)
           SELECT $1, $2, COALESCE(MAX(version), 0) + 1 FROM container_versions WHERE container_id = $1
           RETURNING ${VERSION_COLUMNS}`,
          [containerId, snapshot.id],
        );
        const version = mapVersion(ver.rows[0]!);
        await insertEvent(tx, containerId, input.eventType, {
          ...input.eventPayload,
          version: version.version,
          snapshot: snapshot.runtimeSnapshotName,
          source: snapshot.source,
        });
        return { snapshot, version };
      }),
    );
  }

  removeVersion(containerId: string, version: number, event: { type: string; payload?: Record<string, unknown> }): Promise<SnapshotRow | undefined> {
    return guard(`version ${version} of container ${containerId}`, () =>
      this.db.transaction(async (tx) => {
        const { rows } = await tx.query<{ snapshot_id: unknown }>(
          "DELETE FROM container_versions WHERE container_id = $1 AND version = $2 RETURNING snapshot_id",
          [containerId, version],
        );
        if (!rows[0]) return undefined;
        const snap = await tx.query<SnapshotDbRow>(`SELECT ${SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1`, [rows[0].snapshot_id]);
        await insertEvent(tx, containerId, event.type, { ...event.payload, version });
        return snap.rows[0] ? mapSnapshot(snap.rows[0]) : undefined;
      }),
    );
  }

  async listVersions(containerId: string): Promise<ContainerVersionRow[]> {
    const { rows } = await this.db.query<VersionDbRow>(
      `SELECT ${VERSION_COLUMNS} FROM container_versions WHERE container_id = $1 ORDER BY version`,
      [containerId],
    );
    return rows.map(mapVersion);
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

export interface OpenStoreOptions {
  /** PostgreSQL URL; unset → embedded PGlite under `<dataRoot>/pglite`. */
  databaseUrl?: string;
  dataRoot: string;
  /** PostgreSQL only: use (and create) this schema (tests: one per run). */
  schema?: string;
  /** Overrides the migration files (tests). */
  migrations?: Migration[];
}

/** Opens the database, applies pending migrations and returns the store. */
export async function openStore(opts: OpenStoreOptions): Promise<SqlStore> {
  const db = opts.databaseUrl
    ? await openPostgres({ databaseUrl: opts.databaseUrl, ...(opts.schema ? { schema: opts.schema } : {}) })
    : await openPglite(path.join(opts.dataRoot, "pglite"));
  try {
    await migrate(db, opts.migrations);
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
  return new SqlStore(db);
}
