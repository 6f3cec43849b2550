// One small query interface over two backends: a `pg` Pool (DATABASE_URL) and
// embedded PGlite under the data root. Both speak PostgreSQL, so the
// migrations and the store's SQL are the same for both.
import fs from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { PGlite } from "@electric-sql/pglite";

export interface QueryResult<T> {
  rows: T[];
  /** Rows changed by INSERT/UPDATE/DELETE (0 when the backend does not say). */
  rowCount: number;
}

export interface Db {
  readonly kind: "postgres" | "pglite";
  query<T>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
  /**
   * Runs fn in one transaction: COMMIT when it resolves, ROLLBACK when it
   * rejects. A transaction inside a transaction joins the outer one.
   */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- PostgreSQL

/** A schema name safe to splice into SQL: lowercase letters, digits, underscores. */
export function checkSchemaName(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(schema)}: use [a-z_][a-z0-9_]*, at most 63 characters`);
  }
  return schema;
}

class PgClientDb implements Db {
  readonly kind = "postgres" as const;
  constructor(private readonly client: pg.PoolClient) {}
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    const res = await this.client.query(sql, params as unknown[]);
    return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
  }
  async exec(sql: string): Promise<void> {
    await this.client.query(sql);
  }
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    return fn(this);
  }
  async close(): Promise<void> {
    throw new Error("close() on a transaction handle");
  }
}

class PgPoolDb implements Db {
  readonly kind = "postgres" as const;
  private ended: Promise<void> | undefined;
  constructor(private readonly pool: pg.Pool) {}

  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    const res = await this.pool.query(sql, params as unknown[]);
    return { rows: res.rows as T[], rowCount: res.rowCount ?? 0 };
  }

  async exec(sql: string): Promise<void> {
    await this.pool.query(sql);
  }

  async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query("BEGIN");
      try {
        const result = await fn(new PgClientDb(client));
        await client.query("COMMIT");
        return result;
      } catch (err) {
        try {
          await client.query("ROLLBACK");
        } catch {
          // The connection is unusable; do not hand it back to the pool.
          broken = true;
        }
        throw err;
      }
    } finally {
      client.release(broken);
    }
  }

  close(): Promise<void> {
    this.ended ??= this.pool.end();
    return this.ended;
  }
}

export interface PostgresOptions {
  databaseUrl: string;
  /** Use (and create) this schema instead of the URL's default search_path (tests). */
  schema?: string;
  maxConnections?: number;
}

export async function openPostgres(opts: PostgresOptions): Promise<Db> {
  const config: pg.PoolConfig = {
    connectionString: opts.databaseUrl,
    max: opts.maxConnections ?? 10,
    connectionTimeoutMillis: 10_000,
  };
  if (opts.schema) {
    const schema = checkSchemaName(opts.schema);
    const admin = new pg.Client({ connectionString: opts.databaseUrl, connectionTimeoutMillis: 10_000 });
    await admin.connect();
    try {
      await admin.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    } catch (err) {
      // Two openers racing on IF NOT EXISTS: one of them gets a unique violation.
      if ((err as { code?: unknown }).code !== "23505") throw err;
    } finally {
      await admin.end();
    }
    config.options = `-c search_path=${schema}`;
  }
  const pool = new pg.Pool(config);
  // An idle client's error (server restart) must not crash the process; the
  // next query reconnects.
  pool.on("error", () => {});
  const db = new PgPoolDb(pool);
  try {
    await db.query("SELECT 1");
  } catch (err) {
    await pool.end().catch(() => {});
    throw new Error(`cannot connect to PostgreSQL: ${(err as Error).message}`, { cause: err });
  }
  return db;
}

/** Drops a schema made by openPostgres({schema}) (tests). */
export async function dropPostgresSchema(databaseUrl: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${checkSchemaName(schema)}" CASCADE`);
  } finally {
    await client.end();
  }
}

// ---------------------------------------------------------------- PGlite

/** A FIFO lock: PGlite has one connection, so a transaction must own it. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

interface PgliteQueryable {
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  exec(sql: string): Promise<unknown>;
}

class PgliteTxDb implements Db {
  readonly kind = "pglite" as const;
  constructor(private readonly tx: PgliteQueryable) {}
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    const res = await this.tx.query<T>(sql, [...params]);
    return { rows: res.rows, rowCount: res.affectedRows ?? 0 };
  }
  async exec(sql: string): Promise<void> {
    await this.tx.exec(sql);
  }
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    return fn(this);
  }
  async close(): Promise<void> {
    throw new Error("close() on a transaction handle");
  }
}

class PgliteDb implements Db {
  readonly kind = "pglite" as const;
  private readonly mutex = new Mutex();
  private closed = false;
  constructor(
    private readonly pglite: PGlite,
    private readonly lock: DirLock,
  ) {}

  private check(): void {
    if (this.closed) throw new Error("the embedded database is closed");
  }

  query<T>(sql: string, params: readonly unknown[] = []): Promise<QueryResult<T>> {
    return this.mutex.run(async () => {
      this.check();
      const res = await this.pglite.query<T>(sql, [...params]);
      return { rows: res.rows, rowCount: res.affectedRows ?? 0 };
    });
  }

  exec(sql: string): Promise<void> {
    return this.mutex.run(async () => {
      this.check();
      await this.pglite.exec(sql);
    });
  }

  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
    return this.mutex.run(() => {
      this.check();
      return this.pglite.transaction((tx) => fn(new PgliteTxDb(tx as unknown as PgliteQueryable)));
    });
  }

  close(): Promise<void> {
    return this.mutex.run(async () => {
      if (this.closed) return;
      this.closed = true;
      try {
        await this.pglite.close();
      } finally {
        await this.lock.release();
      }
    });
  }
}

/** Who holds a lock: a pid and that process's start time (so a reused pid is not mistaken for it). */
interface LockOwner {
  pid: number;
  started: string;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined when the process is gone. */
async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

export class DatabaseInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly owner: LockOwner,
  ) {
    super(
      `the embedded database in ${dir} is in use by process ${owner.pid}: one orchestrator at a time ` +
        `(stop the other one, or give each its own data root or a DATABASE_URL)`,
    );
    this.name = "DatabaseInUseError";
  }
}

interface DirLock {
  release(): Promise<void>;
}

/**
 * An exclusive lock on the embedded database (`<dir>.lock`, created with O_EXCL): PGlite
 * has no cross-process locking, and two processes writing one data dir corrupt it. A lock
 * whose process is gone (a crash) is taken over.
 */
async function lockDir(dir: string): Promise<DirLock> {
  const file = `${dir}.lock`;
  const me: LockOwner = { pid: process.pid, started: (await processStartTime(process.pid)) ?? "" };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await fs.writeFile(file, JSON.stringify(me), { flag: "wx", mode: 0o600 });
      return {
        release: async () => {
          const now = await fs.readFile(file, "utf8").catch(() => "");
          if (now === JSON.stringify(me)) await fs.rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const seen = await fs.readFile(file, "utf8").catch(() => "");
    let owner: LockOwner | undefined;
    try {
      const parsed = JSON.parse(seen) as Partial<LockOwner>;
      if (typeof parsed.pid === "number" && typeof parsed.started === "string") owner = { pid: parsed.pid, started: parsed.started };
    } catch {
      // Unreadable or half-written by a process that died while writing it: stale.
    }
    if (owner !== undefined && (await processStartTime(owner.pid)) === owner.started) throw new DatabaseInUseError(dir, owner);
    // Stale: take it over, unless another process just did.
    if ((await fs.readFile(file, "utf8").catch(() => "")) === seen) await fs.rm(file, { force: true });
  }
  throw new Error(`cannot lock the embedded database in ${dir}: ${file} keeps coming back`);
}

/** Opens (creating when missing) the embedded database in dir, locked to this process. */
export async function openPglite(dir: string): Promise<Db> {
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const lock = await lockDir(dir);
  const pglite = new PGlite(dir);
  try {
    await pglite.waitReady;
  } catch (err) {
    await lock.release();
    throw new Error(`cannot open the embedded database in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return new PgliteDb(pglite, lock);
}
