// The generated code in proto/gen is committed; this fails when it no longer
// matches what `npm run gen` produces from the .proto files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, "../..");

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const rel = path.join(prefix, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(path.join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

test("committed proto/gen matches a fresh `buf generate`", async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-gen-"));
  try {
    await fs.cp(path.join(repo, "proto"), path.join(tmp, "proto"), {
      recursive: true,
      filter: (src) => !src.startsWith(path.join(repo, "proto", "gen")),
    });
    await fs.symlink(path.join(repo, "node_modules"), path.join(tmp, "node_modules"));
    await run(path.join(repo, "node_modules", ".bin", "buf"), ["generate"], { cwd: path.join(tmp, "proto") });
    const fresh = path.join(tmp, "proto", "gen");
    const committed = path.join(repo, "proto", "gen");
    const files = await listFiles(fresh);
    assert.ok(files.length > 0, "buf generated nothing");
    assert.deepEqual(await listFiles(committed), files, "proto/gen has different files: run `npm run gen`");
    for (const f of files) {
      const [a, b] = await Promise.all([fs.readFile(path.join(fresh, f), "utf8"), fs.readFile(path.join(committed, f), "utf8")]);
      assert.equal(b, a, `proto/gen/${f} is stale: run \`npm run gen\``);
    }
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
});
