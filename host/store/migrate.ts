// Applies host/store/migrations/NNN_name.sql in order, each in its own
// transaction, recorded in schema_migrations with a checksum. Concurrent
// migrators (two orchestrators starting at once) serialise on a transaction-
// scoped advisory lock, so each migration runs exactly once.
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Db } from "./db.js";

export const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations/", import.meta.url));

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export interface AppliedMigration {
  version: number;
  name: string;
  checksum: string;
  appliedAt: Date;
}

export class MigrationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MigrationError";
  }
}

const FILE_PATTERN = /^(\d+)_([a-z0-9_]+)\.sql$/;

export function checksumOf(sql: string): string {
  return crypto.createHash("sha256").update(sql).digest("hex");
}

/** Reads the migration files of dir, sorted by version; refuses gaps in naming and duplicates. */
export async function loadMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const names = (await fs.readdir(dir)).filter((n) => n.endsWith(".sql")).sort();
  const migrations: Migration[] = [];
  const seen = new Map<number, string>();
  for (const file of names) {
    const m = FILE_PATTERN.exec(file);
    if (!m) throw new MigrationError(`migration file ${file}: name must look like 001_create_tables.sql`);
    const version = Number(m[1]);
    const other = seen.get(version);
    if (other) throw new MigrationError(`migrations ${other} and ${file} share version ${version}`);
    seen.set(version, file);
    const sql = await fs.readFile(path.join(dir, file), "utf8");
    migrations.push({ version, name: m[2]!, sql, checksum: checksumOf(sql) });
  }
  return migrations.sort((a, b) => a.version - b.version);
}

// Any constant works; it only has to be the same for every migrator of a
// database. current_schema() makes test schemas independent of each other.
const LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('memoh-workspace:migrate:' || current_schema()))";

const CREATE_TABLE_SQL = `CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
)`;

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
  applied_at: Date;
}

async function lockAndRead(tx: Db): Promise<Map<number, AppliedRow>> {
  await tx.query(LOCK_SQL);
  await tx.query(CREATE_TABLE_SQL);
  const { rows } = await tx.query<AppliedRow>("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version");
  return new Map(rows.map((r) => [Number(r.version), r]));
}

function verify(applied: Map<number, AppliedRow>, migrations: Migration[]): void {
  const known = new Map(migrations.map((m) => [m.version, m]));
  for (const row of applied.values()) {
    const m = known.get(Number(row.version));
    if (!m) {
      throw new MigrationError(
        `the database has migration ${row.version} (${row.name}) that this program does not know: it was migrated by a newer version`,
      );
    }
    if (m.checksum !== row.checksum) {
      throw new MigrationError(
        `migration ${m.version}_${m.name}.sql changed after it was applied ` +
          `(recorded checksum ${row.checksum.slice(0, 12)}…, file ${m.checksum.slice(0, 12)}…); ` +
          `add a new migration instead of editing an applied one`,
      );
    }
  }
}

/** Applies pending migrations; returns the versions it applied (empty when up to date). */
export async function migrate(db: Db, migrations?: Migration[]): Promise<number[]> {
  const all = migrations ?? (await loadMigrations());
  const applied: number[] = [];
  // Verify everything first, so a changed file fails before anything new runs.
  const pending = await db.transaction(async (tx) => {
    const done = await lockAndRead(tx);
    verify(done, all);
    return all.filter((m) => !done.has(m.version));
  });
  for (const m of pending) {
    await db.transaction(async (tx) => {
      // Another migrator may have applied it while we waited for the lock.
      const done = await lockAndRead(tx);
      if (done.has(m.version)) {
        verify(done, all);
        return;
      }
      try {
        await tx.exec(m.sql);
      } catch (err) {
        throw new MigrationError(`migration ${m.version}_${m.name}.sql failed: ${(err as Error).message}`, { cause: err });
      }
      await tx.query("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", [m.version, m.name, m.checksum]);
      applied.push(m.version);
    });
  }
  return applied;
}

export async function listAppliedMigrations(db: Db): Promise<AppliedMigration[]> {
  const { rows } = await db.query<AppliedRow>("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version");
  return rows.map((r) => ({ version: Number(r.version), name: r.name, checksum: r.checksum, appliedAt: r.applied_at }));
}
