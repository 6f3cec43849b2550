// The two pieces of `npm test` that a fresh machine depends on, run for real:
// scripts/setup-postgres.sh when nothing answers on its port (it creates, configures and
// starts a cluster, then the database), and scripts/test.sh passing node --test
// arguments through (`npm test -- --test-name-pattern=<regex>`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { REPO_ROOT, freePort } from "./env/server.js";

const run = promisify(execFile);

test("setup-postgres on a port where nothing answers: a cluster is created and started, TCP from 127.0.0.1 is trusted, the test database exists; a second run changes nothing", { timeout: 300_000 }, async () => {
  const port = await freePort();
  const script = path.join(REPO_ROOT, "scripts", "setup-postgres.sh");
  const version = (await run("bash", ["-c", "ls /etc/postgresql | sort -n | tail -1"])).stdout.trim();
  assert.match(version, /^\d+$/, "no PostgreSQL installation to create a cluster with");
  try {
    const first = await run("bash", [script, String(port)], { env: { ...process.env, TEST_PG_DATABASE: "tooling_test" } });
    assert.match(first.stdout, new RegExp(`${port}`), first.stdout);
    const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "tooling_test" });
    await client.connect();
    try {
      assert.equal((await client.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one, 1);
    } finally {
      await client.end();
    }
    const second = await run("bash", [script, String(port)], { env: { ...process.env, TEST_PG_DATABASE: "tooling_test" } });
    assert.equal(second.stdout, "", `a second run changed something: ${second.stdout}`);
  } finally {
    // Only the cluster this test made: the one listening on its port.
    const listed = (await run("pg_lsclusters", ["-h"])).stdout.split("\n").map((l) => l.trim().split(/\s+/));
    for (const [ver, name, p] of listed) if (ver !== undefined && name !== undefined && p === String(port)) await run("pg_dropcluster", ["--stop", ver, name]);
  }
});

test("scripts/test.sh passes --test-name-pattern and test files through to node --test", { timeout: 300_000 }, async () => {
  // Not as a subtest of this run: node --test marks its children through NODE_TEST_CONTEXT.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = await run("bash", [path.join(REPO_ROOT, "scripts", "test.sh"), "test/unit/botid.test.ts", "--test-name-pattern=^KeyedLock"], { cwd: REPO_ROOT, env, maxBuffer: 16 * 1024 * 1024 });
  const pass = Number(/^ℹ pass (\d+)/m.exec(r.stdout)?.[1]);
  const skipped = Number(/^ℹ skipped (\d+)/m.exec(r.stdout)?.[1]);
  assert.ok(pass >= 1, r.stdout.slice(-2000));
  assert.ok(skipped >= 1, `nothing was filtered out:\n${r.stdout.slice(-2000)}`);
  assert.doesNotMatch(r.stdout, /test\/integration/);
});
