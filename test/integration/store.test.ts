// The store suite, run against the shared PostgreSQL (a private schema per run)
// and against embedded PGlite in a temp dir. A PostgreSQL that cannot be
// reached fails the suite; it never skips.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { DatabaseInUseError, dropPostgresSchema, openPostgres } from "../../host/store/db.js";
import { checksumOf, listAppliedMigrations, loadMigrations, migrate, MigrationError, type Migration } from "../../host/store/migrate.js";
import { openStore, SqlStore, StoreError } from "../../host/store/store.js";
import type { UpsertContainer } from "../../host/store/types.js";

const DATABASE_URL = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

interface Backend {
  name: "postgres" | "pglite";
  /** Opens a store on this run's database (migrating it). */
  open(extra?: { migrations?: Migration[] }): Promise<SqlStore>;
  /** Removes this run's database. */
  destroy(): Promise<void>;
}

async function postgresBackend(): Promise<Backend> {
  const schema = `store_test_${process.pid}_${crypto.randomBytes(4).toString("hex")}`;
  const dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-store-pg-"));
  return {
    name: "postgres",
    open: (extra = {}) => openStore({ databaseUrl: DATABASE_URL, dataRoot, schema, ...extra }),
    async destroy() {
      await dropPostgresSchema(DATABASE_URL, schema);
      await fs.rm(dataRoot, { recursive: true, force: true });
    },
  };
}

async function pgliteBackend(): Promise<Backend> {
  const dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-store-pglite-"));
  return {
    name: "pglite",
    open: (extra = {}) => openStore({ dataRoot, ...extra }),
    destroy: () => fs.rm(dataRoot, { recursive: true, force: true }),
  };
}

function container(bot: string, over: Partial<UpsertContainer> = {}): UpsertContainer {
  return {
    botId: bot,
    containerId: `workspace-${bot}`,
    containerName: `workspace-${bot}`,
    image: "localhost/memoh/workspace:test",
    status: "creating",
    namespace: "memoh-test",
    autoStart: true,
    containerPath: `/var/lib/memoh/run/${bot}`,
    cdiDevices: [],
    ...over,
  };
}

function isStoreError(code: StoreError["code"], pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof StoreError, `expected a StoreError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  };
}

function suite(makeBackend: () => Promise<Backend>, name: Backend["name"]) {
  describe(`store on ${name}`, () => {
    let backend: Backend;
    let store: SqlStore;

    before(async () => {
      backend = await makeBackend();
      store = await backend.open();
    });

    after(async () => {
      await store?.close();
      await backend?.destroy();
    });

    test("reports its backend", () => {
      assert.equal(store.kind, name);
    });

    test("migrations are applied in order, recorded, and re-opening applies nothing", async () => {
      const files = await loadMigrations();
      assert.ok(files.length >= 1);
      const recorded = await listAppliedMigrations(store.db);
      assert.deepEqual(
        recorded.map((m) => [m.version, m.name, m.checksum]),
        files.map((m) => [m.version, m.name, m.checksum]),
      );
      assert.ok(recorded.every((m) => m.appliedAt instanceof Date));
      // Open the database a second time (a restarted orchestrator): nothing to apply.
      await store.close();
      store = await backend.open();
      assert.deepEqual(await migrate(store.db), []);
      assert.deepEqual(
        (await listAppliedMigrations(store.db)).map((m) => m.appliedAt.getTime()),
        recorded.map((m) => m.appliedAt.getTime()),
      );
    });

    test("a new migration is applied once; editing an applied one is refused", async () => {
      const files = await loadMigrations();
      const extra = extraMigration();
      assert.deepEqual(await migrate(store.db, [...files, extra]), [900]);
      assert.deepEqual(await migrate(store.db, [...files, extra]), []);
      const { rows } = await store.db.query<{ n: unknown }>("SELECT count(*) AS n FROM test_extra");
      assert.equal(Number(rows[0]!.n), 1);

      const edited = { ...extra, sql: extra.sql + " -- edited", checksum: checksumOf(extra.sql + " -- edited") };
      await assert.rejects(migrate(store.db, [...files, edited]), (err) => {
        assert.ok(err instanceof MigrationError);
        assert.match(err.message, /migration 900_test_extra\.sql changed after it was applied/);
        return true;
      });
      // Dropping the file means this program is older than the database.
      await assert.rejects(migrate(store.db, files), /migration 900 \(test_extra\) that this program does not know/);

      // Undo by hand, so the rest of the suite runs with the real migrations.
      await store.db.query("DELETE FROM schema_migrations WHERE version = 900");
      await store.db.query("DROP TABLE test_extra");
    });

    test("a failing migration leaves nothing behind", async () => {
      const files = await loadMigrations();
      const bad: Migration = { version: 950, name: "bad", sql: "CREATE TABLE half_done (id int); SELECT no_such_function();", checksum: "" };
      bad.checksum = checksumOf(bad.sql);
      await assert.rejects(migrate(store.db, [...files, bad]), /migration 950_bad\.sql failed/);
      const { rows } = await store.db.query<{ t: string | null }>("SELECT to_regclass('half_done')::text AS t");
      assert.equal(rows[0]!.t, null);
      assert.ok(!(await listAppliedMigrations(store.db)).some((m) => m.version === 950));
    });

    test("upsert, get, list", async () => {
      const a = await store.upsertContainer(container("alpha"));
      assert.equal(a.botId, "alpha");
      assert.equal(a.containerId, "workspace-alpha");
      assert.equal(a.status, "creating");
      assert.equal(a.autoStart, true);
      assert.ok(a.createdAt instanceof Date && a.updatedAt instanceof Date);
      assert.equal(a.lastStartedAt, null);
      assert.equal(a.lastStoppedAt, null);

      await store.upsertContainer(container("beta", { autoStart: false, status: "stopped" }));
      assert.deepEqual((await store.getContainerByBot("alpha"))?.containerId, "workspace-alpha");
      assert.deepEqual((await store.getContainer("workspace-beta"))?.botId, "beta");
      assert.equal(await store.getContainerByBot("nobody"), undefined);
      assert.equal(await store.getContainer("workspace-nobody"), undefined);

      const all = await store.listContainers();
      assert.deepEqual(
        all.map((c) => c.botId).filter((b) => b === "alpha" || b === "beta"),
        ["alpha", "beta"],
      );
      assert.deepEqual(
        (await store.listContainers({ autoStart: true })).map((c) => c.botId).filter((b) => b === "alpha" || b === "beta"),
        ["alpha"],
      );
      assert.deepEqual(
        (await store.listContainers({ status: "stopped", autoStart: false })).map((c) => c.botId).filter((b) => b === "beta"),
        ["beta"],
      );

      // Upsert replaces the bot's row: a legacy route becomes a workspace.
      const replaced = await store.upsertContainer(container("alpha", { image: "other:1", containerPath: "tcp:10.0.0.2:9090" }));
      assert.equal(replaced.image, "other:1");
      assert.equal(replaced.containerPath, "tcp:10.0.0.2:9090");
      assert.equal(replaced.createdAt.getTime(), a.createdAt.getTime());
      assert.ok(replaced.updatedAt.getTime() >= a.updatedAt.getTime());
      assert.deepEqual(replaced.cdiDevices, []);
    });

    test("CDI device names round-trip as a list, including names with quotes, commas and braces", async () => {
      const devices = ["example.com/gpu=0", "example.com/gpu=all", 'odd.example/x=a,b', "odd.example/y={z}", 'odd.example/q=a"b\\c'];
      const row = await store.upsertContainer(container("gamma", { cdiDevices: devices }));
      assert.deepEqual(row.cdiDevices, devices);
      assert.deepEqual((await store.getContainerByBot("gamma"))?.cdiDevices, devices);
      assert.deepEqual((await store.listContainers()).find((c) => c.botId === "gamma")?.cdiDevices, devices);
      // Replacing the row replaces the list.
      assert.deepEqual((await store.upsertContainer(container("gamma", { cdiDevices: ["example.com/gpu=1"] }))).cdiDevices, ["example.com/gpu=1"]);
      assert.deepEqual((await store.upsertContainer(container("gamma"))).cdiDevices, []);
      await store.deleteContainer("workspace-gamma");
    });

    test("a container id owned by another bot is a clear conflict; bad status is refused", async () => {
      await store.upsertContainer(container("gamma"));
      await assert.rejects(
        store.upsertContainer(container("delta", { containerId: "workspace-gamma" })),
        isStoreError("conflict", /container workspace-gamma for bot delta: already exists/),
      );
      assert.equal(await store.getContainerByBot("delta"), undefined);
      await assert.rejects(
        store.upsertContainer(container("delta", { status: "bogus" as "running" })),
        isStoreError("invalid", /container workspace-delta for bot delta/),
      );
    });

    test("setStatus sets timestamps and records an event in the same transaction", async () => {
      await store.upsertContainer(container("epsilon"));
      await store.setStatus("workspace-epsilon", "running", { type: "started", payload: { pid: 42 } });
      const running = await store.getContainer("workspace-epsilon");
      assert.equal(running?.status, "running");
      assert.ok(running?.lastStartedAt instanceof Date);
      assert.equal(running?.lastStoppedAt, null);

      await store.setStatus("workspace-epsilon", "stopped");
      const stopped = await store.getContainer("workspace-epsilon");
      assert.equal(stopped?.status, "stopped");
      assert.ok(stopped?.lastStoppedAt instanceof Date);
      assert.equal(stopped?.lastStartedAt?.getTime(), running?.lastStartedAt?.getTime());

      const events = await store.listEvents("workspace-epsilon");
      assert.deepEqual(
        events.map((e) => [e.eventType, e.payload]),
        [
          ["status", { from: "running", to: "stopped" }],
          ["started", { pid: 42, from: "creating", to: "running" }],
        ],
      );
      assert.ok(events.every((e) => e.createdAt instanceof Date && Number.isInteger(e.id)));
      assert.equal((await store.listEvents("workspace-epsilon", 1)).length, 1);

      // Unknown container: a clear error and no orphan event.
      await assert.rejects(store.setStatus("workspace-nobody", "running"), isStoreError("not_found", /workspace-nobody/));
      assert.deepEqual(await store.listEvents("workspace-nobody"), []);

      // A refused status rolls back the event too.
      await assert.rejects(store.setStatus("workspace-epsilon", "bogus" as "running"), isStoreError("invalid", /workspace-epsilon/));
      assert.equal((await store.listEvents("workspace-epsilon")).length, 2);
      assert.equal((await store.getContainer("workspace-epsilon"))?.status, "stopped");
    });

    test("recordEvent keeps jsonb payloads", async () => {
      await store.recordEvent("workspace-zeta", "pull", { image: "x", layers: [1, 2], nested: { ok: true } });
      await store.recordEvent("workspace-zeta", "note");
      const events = await store.listEvents("workspace-zeta");
      assert.deepEqual(events[0]?.payload, {});
      assert.deepEqual(events[1]?.payload, { image: "x", layers: [1, 2], nested: { ok: true } });
    });

    test("snapshots and versions; versions are unique per container under concurrency", async () => {
      await store.upsertContainer(container("eta"));
      await store.upsertContainer(container("theta"));
      const snap = await store.addSnapshot({
        containerId: "workspace-eta",
        runtimeSnapshotName: "eta-v1",
        displayName: "first",
        parent: null,
        snapshotter: "overlayfs",
        source: "manual",
      });
      assert.equal(snap.containerId, "workspace-eta");
      assert.equal(snap.parent, null);
      assert.ok(Number.isInteger(snap.id) && snap.createdAt instanceof Date);
      await assert.rejects(
        store.addSnapshot({ ...snap, displayName: "dup" }),
        isStoreError("conflict", /snapshot eta-v1 of container workspace-eta: already exists/),
      );
      await assert.rejects(
        store.addSnapshot({ ...snap, runtimeSnapshotName: "x", containerId: "workspace-nobody" }),
        isStoreError("not_found", /workspace-nobody/),
      );
      const other = await store.addSnapshot({ ...snap, containerId: "workspace-theta", runtimeSnapshotName: "theta-v1", parent: "eta-v1" });
      assert.equal(other.parent, "eta-v1");
      assert.deepEqual(
        (await store.listSnapshots("workspace-eta")).map((s) => s.runtimeSnapshotName),
        ["eta-v1"],
      );

      const versions = await Promise.all(Array.from({ length: 10 }, () => store.addVersion("workspace-eta", snap.id)));
      assert.deepEqual(
        versions.map((v) => v.version).sort((a, b) => a - b),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      );
      // Another container counts from 1, interleaved with this one.
      const [t1, e11] = await Promise.all([store.addVersion("workspace-theta", other.id), store.addVersion("workspace-eta", snap.id)]);
      assert.equal(t1.version, 1);
      assert.equal(e11.version, 11);
      assert.deepEqual(
        (await store.listVersions("workspace-eta")).map((v) => v.version),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
      );
      assert.ok((await store.listVersions("workspace-eta")).every((v) => v.snapshotId === snap.id));

      await assert.rejects(store.addVersion("workspace-eta", other.id), isStoreError("invalid", /belongs to container workspace-theta/));
      await assert.rejects(store.addVersion("workspace-nobody", snap.id), isStoreError("not_found", /workspace-nobody/));
      await assert.rejects(store.addVersion("workspace-eta", 987654), isStoreError("not_found", /snapshot 987654/));

      // Deleting a snapshot removes the versions that point at it.
      await store.deleteSnapshot(other.id);
      assert.deepEqual(await store.listSnapshots("workspace-theta"), []);
      assert.deepEqual(await store.listVersions("workspace-theta"), []);
    });

    test("recordVersion writes the snapshot, the version (max + 1) and the event in one transaction; removeVersion keeps the snapshot row", async () => {
      await store.upsertContainer(container("kappa"));
      const base = { containerId: "workspace-kappa", displayName: "one", parent: "sha256:layers", snapshotter: "overlayfs", source: "manual", eventType: "version_created", eventPayload: { botId: "kappa" } };
      const concurrent = await Promise.all(["k1", "k2", "k3"].map((n) => store.recordVersion({ ...base, runtimeSnapshotName: n })));
      assert.deepEqual(concurrent.map((r) => r.version.version).sort(), [1, 2, 3]);
      const events = (await store.listEvents("workspace-kappa")).filter((e) => e.eventType === "version_created");
      assert.deepEqual(events.map((e) => e.payload.version).sort(), [1, 2, 3]);
      // A duplicate snapshot name fails the transaction: no version, no event, no snapshot row.
      await assert.rejects(store.recordVersion({ ...base, runtimeSnapshotName: "k2" }), isStoreError("conflict", /already exists/));
      assert.equal((await store.listVersions("workspace-kappa")).length, 3);
      assert.equal((await store.listSnapshots("workspace-kappa")).length, 3);
      assert.equal((await store.listEvents("workspace-kappa")).filter((e) => e.eventType === "version_created").length, 3);
      await assert.rejects(store.recordVersion({ ...base, containerId: "workspace-nobody", runtimeSnapshotName: "n1" }), isStoreError("not_found", /workspace-nobody/));
      const removed = await store.removeVersion("workspace-kappa", 2, { type: "version_deleted" });
      assert.equal(removed?.runtimeSnapshotName, concurrent.find((r) => r.version.version === 2)!.snapshot.runtimeSnapshotName);
      assert.deepEqual((await store.listVersions("workspace-kappa")).map((v) => v.version), [1, 3]);
      assert.equal((await store.listSnapshots("workspace-kappa")).length, 3, "the snapshot row stays until its snapshot is removed");
      assert.equal(await store.removeVersion("workspace-kappa", 2, { type: "version_deleted" }), undefined);
      const next = await store.recordVersion({ ...base, runtimeSnapshotName: "k4" });
      assert.equal(next.version.version, 4, "a deleted version's number is not reused while a higher one exists");
    });

    test("delete purges the row with its snapshots and versions, keeps its events", async () => {
      await store.upsertContainer(container("iota"));
      const snap = await store.addSnapshot({
        containerId: "workspace-iota",
        runtimeSnapshotName: "iota-v1",
        displayName: "",
        parent: null,
        snapshotter: "overlayfs",
        source: "auto",
      });
      await store.addVersion("workspace-iota", snap.id);
      await store.setStatus("workspace-iota", "deleted");
      await store.deleteContainer("workspace-iota");
      assert.equal(await store.getContainerByBot("iota"), undefined);
      assert.deepEqual(await store.listSnapshots("workspace-iota"), []);
      assert.deepEqual(await store.listVersions("workspace-iota"), []);
      assert.equal((await store.listEvents("workspace-iota"))[0]?.payload.to, "deleted");
      // Deleting what is not there is not an error (idempotent cleanup).
      await store.deleteContainer("workspace-iota");
      // The bot can be created again.
      assert.equal((await store.upsertContainer(container("iota"))).status, "creating");
    });

    test("data persists across close and reopen", async () => {
      await store.upsertContainer(container("kappa", { status: "running" }));
      await store.close();
      store = await backend.open();
      assert.equal((await store.getContainerByBot("kappa"))?.status, "running");
      assert.equal((await store.getContainerByBot("alpha"))?.image, "other:1");
    });

    test("limits round-trip; a row without them reads undefined; invalid limits are refused and change nothing", async () => {
      const limits = { memoryBytes: 6 * 1024 ** 3 + 1, cpus: 0.5, pids: 512 };
      const row = await store.upsertContainer(container("lambda", { limits }));
      assert.deepEqual(row.limits, limits);
      assert.equal(row.oomKills, 0);
      assert.equal(row.lastOomAt, undefined);
      assert.deepEqual((await store.getContainerByBot("lambda"))?.limits, limits);
      assert.deepEqual((await store.listContainers()).find((c) => c.botId === "lambda")?.limits, limits);
      // More than 2^32 bytes: the bigint survives pg's string form exactly.
      const big = { memoryBytes: 2 ** 52 + 3, cpus: 1024, pids: 2 ** 31 - 1 };
      assert.deepEqual((await store.upsertContainer(container("lambda", { limits: big }))).limits, big);
      // Replacing the row without limits stores none: the manager's defaults apply.
      assert.equal((await store.upsertContainer(container("lambda"))).limits, undefined);
      assert.equal((await store.getContainerByBot("lambda"))?.limits, undefined);

      for (const bad of [
        { memoryBytes: 0, cpus: 1, pids: 10 },
        { memoryBytes: 1.5, cpus: 1, pids: 10 },
        { memoryBytes: 2 ** 53, cpus: 1, pids: 10 },
        { memoryBytes: 1024, cpus: 0, pids: 10 },
        { memoryBytes: 1024, cpus: Number.NaN, pids: 10 },
        { memoryBytes: 1024, cpus: Number.POSITIVE_INFINITY, pids: 10 },
        { memoryBytes: 1024, cpus: 1, pids: 2 ** 31 },
        { memoryBytes: 1024, cpus: 1, pids: -1 },
      ]) {
        await assert.rejects(store.upsertContainer(container("lambda", { limits: bad })), isStoreError("invalid", /container workspace-lambda for bot lambda: (memoryBytes|cpus|pids) must be/));
        await assert.rejects(store.setLimits("workspace-lambda", bad), isStoreError("invalid", /limits of container workspace-lambda: (memoryBytes|cpus|pids) must be/));
      }
      assert.equal((await store.getContainerByBot("lambda"))?.limits, undefined);
      assert.deepEqual(
        (await store.listEvents("workspace-lambda")).filter((e) => e.eventType === "limits_changed"),
        [],
      );
      // The table refuses half a set of limits even from SQL that bypasses the store.
      await assert.rejects(
        store.db.query("UPDATE containers SET memory_limit_bytes = 1024 WHERE container_id = 'workspace-lambda'"),
        /containers_limits_check/,
      );
      await assert.rejects(
        store.db.query("UPDATE containers SET memory_limit_bytes = 1024, cpu_limit = 'NaN', pids_limit = 1 WHERE container_id = 'workspace-lambda'"),
        /containers_limits_check/,
      );
    });

    test("rows written before the limits migration read limits undefined and no OOM kills", async () => {
      const older = await makeBackend();
      try {
        const files = await loadMigrations();
        const limitsMigration = files.find((m) => m.name === "workspace_limits");
        assert.ok(limitsMigration, "a workspace_limits migration exists");
        let s = await older.open({ migrations: files.filter((m) => m.version < limitsMigration.version) });
        await s.db.query(
          `INSERT INTO containers (bot_id, container_id, container_name, image, status, namespace, auto_start, container_path)
           VALUES ('old', 'workspace-old', 'workspace-old', 'img', 'stopped', 'ns', true, '/p')`,
        );
        await s.close();
        s = await older.open();
        try {
          const row = await s.getContainerByBot("old");
          assert.equal(row?.status, "stopped");
          assert.equal(row?.limits, undefined);
          assert.equal(row?.oomKills, 0);
          assert.equal(row?.lastOomAt, undefined);
        } finally {
          await s.close();
        }
      } finally {
        await older.destroy();
      }
    });

    test("setLimits updates the row and records limits_changed with from and to, in one transaction", async () => {
      await store.upsertContainer(container("mu"));
      const first = { memoryBytes: 2048 * 1024 * 1024, cpus: 2, pids: 1024 };
      const updated = await store.setLimits("workspace-mu", first);
      assert.deepEqual(updated.limits, first);
      assert.deepEqual((await store.getContainer("workspace-mu"))?.limits, first);
      const second = { memoryBytes: 512 * 1024 * 1024, cpus: 0.25, pids: 64 };
      await store.setLimits("workspace-mu", second, { payload: { by: "admin" } });
      assert.deepEqual((await store.getContainer("workspace-mu"))?.limits, second);
      const events = (await store.listEvents("workspace-mu")).filter((e) => e.eventType === "limits_changed");
      assert.deepEqual(
        events.map((e) => e.payload),
        [
          { by: "admin", from: first, to: second },
          { from: null, to: first },
        ],
      );
      await assert.rejects(store.setLimits("workspace-nobody", first), isStoreError("not_found", /workspace-nobody/));
      assert.deepEqual(await store.listEvents("workspace-nobody"), []);
    });

    test("recordOom counts every kill under concurrency and records an oom event for each", async () => {
      await store.upsertContainer(container("nu"));
      const counts = await Promise.all(Array.from({ length: 20 }, (_, i) => store.recordOom("workspace-nu", { pid: 100 + i })));
      assert.deepEqual(
        counts.sort((a, b) => a - b),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      const row = await store.getContainer("workspace-nu");
      assert.equal(row?.oomKills, 20);
      assert.ok(row?.lastOomAt instanceof Date);
      const events = (await store.listEvents("workspace-nu", 100)).filter((e) => e.eventType === "oom");
      assert.equal(events.length, 20);
      assert.deepEqual(
        events.map((e) => e.payload.oomKills).sort((a, b) => Number(a) - Number(b)),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
      // Replacing the row (a rebuild) keeps the bot's OOM history.
      assert.equal((await store.upsertContainer(container("nu", { status: "running" }))).oomKills, 20);
      await assert.rejects(store.recordOom("workspace-nobody"), isStoreError("not_found", /workspace-nobody/));
      assert.deepEqual(await store.listEvents("workspace-nobody"), []);
    });

    test("pruneEvents keeps exactly the newest N of each container and counts what it deleted", async () => {
      // Events of containers that are not in the table count too (the audit trail outlives rows).
      const ids = ["prune-a", "prune-b", "prune-c"];
      const written = { "prune-a": 12, "prune-b": 3, "prune-c": 7 } as Record<string, number>;
      for (const id of ids) {
        for (let i = 0; i < written[id]!; i++) await store.recordEvent(id, "tick", { i });
      }
      const before = new Map<string, number>();
      for (const { container_id, n } of (
        await store.db.query<{ container_id: string; n: unknown }>("SELECT container_id, count(*) AS n FROM lifecycle_events GROUP BY container_id")
      ).rows) {
        before.set(container_id, Number(n));
      }
      const keep = 5;
      const expectedDeleted = [...before.values()].reduce((sum, n) => sum + Math.max(0, n - keep), 0);
      assert.ok(expectedDeleted >= 7 + 2, "the suite wrote enough events to prune");

      assert.equal(await store.pruneEvents(keep), expectedDeleted);
      for (const [id, n] of before) {
        assert.equal((await store.listEvents(id, 1000)).length, Math.min(n, keep), id);
      }
      // The survivors are the newest ones.
      assert.deepEqual(
        (await store.listEvents("prune-a", 1000)).map((e) => e.payload.i),
        [11, 10, 9, 8, 7],
      );
      assert.deepEqual(
        (await store.listEvents("prune-b", 1000)).map((e) => e.payload.i),
        [2, 1, 0],
      );
      assert.equal(await store.pruneEvents(keep), 0, "a second prune finds nothing");
      await assert.rejects(store.pruneEvents(-1), isStoreError("invalid", /keepPerContainer must be a non-negative integer/));
      await assert.rejects(store.pruneEvents(1.5), isStoreError("invalid", /keepPerContainer/));
      assert.equal((await store.listEvents("prune-a", 1000)).length, keep);
    });

    if (name === "postgres") {
      test("concurrent migrators on a fresh schema apply each migration once", async () => {
        const schema = `store_test_mig_${process.pid}_${crypto.randomBytes(4).toString("hex")}`;
        const dbs = await Promise.all(Array.from({ length: 4 }, () => openPostgres({ databaseUrl: DATABASE_URL, schema })));
        try {
          const results = await Promise.all(dbs.map((db) => migrate(db)));
          const files = await loadMigrations();
          assert.deepEqual(results.flat().sort(), files.map((m) => m.version).sort());
          assert.equal((await listAppliedMigrations(dbs[0]!)).length, files.length);
        } finally {
          await Promise.all(dbs.map((db) => db.close()));
          await dropPostgresSchema(DATABASE_URL, schema);
        }
      });

      test("an unreachable PostgreSQL is a clear error", async () => {
        await assert.rejects(
          openStore({ databaseUrl: "postgres://postgres@127.0.0.1:1/test", dataRoot: os.tmpdir() }),
          /cannot connect to PostgreSQL/,
        );
      });
    }
  });
}

function extraMigration(): Migration {
  const sql = "CREATE TABLE test_extra (id int PRIMARY KEY); INSERT INTO test_extra VALUES (1);";
  return { version: 900, name: "test_extra", sql, checksum: checksumOf(sql) };
}

suite(postgresBackend, "postgres");
suite(pgliteBackend, "pglite");

describe("the embedded database is one process's at a time", () => {
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
  const storeModule = path.join(repoRoot, "host", "store", "store.ts");
  let dataRoot: string;

  before(async () => {
    dataRoot = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-store-lock-"));
  });
  after(async () => {
    await fs.rm(dataRoot, { recursive: true, force: true });
  });

  /** Opens the store in another process; `then` runs there once it is open ("close" or "crash"). */
  function openElsewhere(then: "close" | "crash"): Promise<{ code: number | null; stderr: string }> {
    const script =
      `import { openStore } from ${JSON.stringify(storeModule)};\n` +
      `const s = await openStore({ dataRoot: ${JSON.stringify(dataRoot)} });\n` +
      `await s.upsertContainer({ botId: "from-child", containerId: "workspace-from-child", containerName: "workspace-from-child", image: "i", status: "stopped", namespace: "n", autoStart: true, containerPath: "/p", cdiDevices: [] });\n` +
      (then === "close" ? "await s.close();\n" : "process.kill(process.pid, 'SIGKILL');\n");
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("error", reject);
      child.on("exit", (code) => resolve({ code, stderr }));
    });
  }

  test("a second opener, in this process or another, gets a clear error; after close it opens", async () => {
    const first = await openStore({ dataRoot });
    try {
      await assert.rejects(openStore({ dataRoot }), (err) => {
        assert.ok(err instanceof DatabaseInUseError, String(err));
        assert.equal(err.owner.pid, process.pid);
        assert.match(err.message, /in use by process \d+: one orchestrator at a time/);
        return true;
      });
      const other = await openElsewhere("close");
      assert.notEqual(other.code, 0);
      assert.match(other.stderr, new RegExp(`in use by process ${process.pid}`));
    } finally {
      await first.close();
    }
    await fs.access(path.join(dataRoot, "pglite.lock")).then(
      () => assert.fail("the lock outlived close()"),
      () => undefined,
    );
    const other = await openElsewhere("close");
    assert.equal(other.code, 0, other.stderr);
    const again = await openStore({ dataRoot });
    assert.equal((await again.getContainerByBot("from-child"))?.status, "stopped");
    await again.close();
  });

  test("the lock of a process that died (killed, or a pid now reused) is taken over", async () => {
    const crashed = await openElsewhere("crash");
    assert.equal(crashed.code, null, "the child was to be killed");
    await fs.access(path.join(dataRoot, "pglite.lock")); // left behind by the killed process
    const s = await openStore({ dataRoot });
    assert.equal((await s.getContainerByBot("from-child"))?.status, "stopped");
    await s.close();
    // A lock naming a live pid with another start time: that pid was reused, the owner is gone.
    await fs.writeFile(path.join(dataRoot, "pglite.lock"), JSON.stringify({ pid: process.pid, started: "1" }));
    const t = await openStore({ dataRoot });
    await t.close();
  });
});
