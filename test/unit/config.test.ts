// Configuration: defaults, the TOML [workspace] section, environment
// variables winning over the file, and validation that names every problem.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { ConfigError, DEFAULT_IMAGE, loadConfig, parseListen } from "../../host/config.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let dir: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-config-test-"));
});
after(() => fs.rm(dir, { recursive: true, force: true }));

async function workdir(name: string, toml?: string): Promise<string> {
  const d = path.join(dir, name);
  await fs.mkdir(d, { recursive: true });
  if (toml !== undefined) await fs.writeFile(path.join(d, "memoh-workspace.toml"), toml);
  return d;
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail("expected a ConfigError");
}

test("defaults without a file or environment", async () => {
  const cwd = await workdir("empty");
  const c = loadConfig({ argv: [], env: {}, cwd });
  assert.deepEqual(c, {
    configFile: undefined,
    listen: { host: "127.0.0.1", port: 8080 },
    adminToken: undefined,
    databaseUrl: undefined,
    dataRoot: "/var/lib/memoh",
    containerdAddress: "/run/containerd/containerd.sock",
    namespace: "memoh",
    snapshotter: "overlayfs",
    runtimePath: path.join(repoRoot, "runtime-bundle", "out"),
    image: DEFAULT_IMAGE,
    pullPolicy: "if_not_present",
    cniConfDir: "/etc/cni/net.d",
    cniBinDirs: ["/opt/cni/bin", "/usr/lib/cni"],
    registryAuth: undefined,
    registryCa: undefined,
    registryInsecure: [],
    cniIsolation: true,
    cniFirewall: true,
    cniBlockHost: true,
    cniBlockMetadata: true,
    limits: { memoryBytes: 2048 * 1024 * 1024, cpus: 2, pids: 1024 },
    lockTimeoutMs: 120_000,
    eventsKeep: 1000,
    taskLogMaxBytes: 10 * 1024 * 1024,
    taskLogKeep: 2,
    uploadMaxBytes: 4096 * 1024 * 1024,
    importMaxBytes: 16384 * 1024 * 1024,
    importMaxEntries: 1_000_000,
    mcpSessionIdleMs: 1_800_000,
    mcpAllowedHosts: [],
    mcpStdioIdleMs: 600_000,
    jobMaxRuntimeMs: 1_800_000,
    jobRetentionMs: 3_600_000,
  });
});

test("the default ./memoh-workspace.toml is read; relative paths resolve against its dir", async () => {
  const cwd = await workdir(
    "file",
    `
[workspace]
listen = "0.0.0.0:9000"
data_root = "state"
namespace = "memoh-test"
pull_policy = "always"
cni_bin_dir = ["/opt/cni/bin", "plugins"]
cni_isolation = false
cni_firewall = "off"
cni_block_host = false
cni_block_metadata = "off"
database_url = "postgres://postgres@127.0.0.1:5432/test"
registry_auth = "auth/config.json"
admin_token = "0123456789abcdef0123"

[other]
ignored = true
`,
  );
  const c = loadConfig({ env: {}, cwd });
  assert.equal(c.configFile, path.join(cwd, "memoh-workspace.toml"));
  assert.deepEqual(c.listen, { host: "0.0.0.0", port: 9000 });
  assert.equal(c.dataRoot, path.join(cwd, "state"));
  assert.equal(c.namespace, "memoh-test");
  assert.equal(c.pullPolicy, "always");
  assert.deepEqual(c.cniBinDirs, ["/opt/cni/bin", path.join(cwd, "plugins")]);
  assert.equal(c.cniIsolation, false);
  assert.equal(c.cniFirewall, false);
  assert.equal(c.cniBlockHost, false);
  assert.equal(c.cniBlockMetadata, false);
  assert.equal(c.databaseUrl, "postgres://postgres@127.0.0.1:5432/test");
  assert.equal(c.registryAuth, path.join(cwd, "auth", "config.json"));
  assert.equal(c.adminToken, "0123456789abcdef0123");
});

test("environment variables win over the file; --config picks another file", async () => {
  const cwd = await workdir("env", `[workspace]\nnamespace = "from-file"\nimage = "file/image:1"\nsnapshotter = "native"\n`);
  const other = path.join(cwd, "other.toml");
  await fs.writeFile(other, `[workspace]\nnamespace = "from-other"\ncni_conf_dir = "/etc/other-cni"\n`);
  const env = {
    MEMOH_NAMESPACE: "from-env",
    MEMOH_LISTEN: "[::1]:8181",
    MEMOH_DATA_ROOT: "data",
    MEMOH_CONTAINERD_ADDRESS: "unix:///tmp/ctrd/containerd.sock",
    MEMOH_RUNTIME_PATH: "/opt/rt",
    MEMOH_PULL_POLICY: "never",
    MEMOH_CNI_BIN_DIR: "/a:/b",
    MEMOH_CNI_ISOLATION: "off",
    MEMOH_IMAGE: "",
  };
  const c = loadConfig({ env, cwd });
  assert.equal(c.namespace, "from-env");
  assert.equal(c.image, "file/image:1", "an empty variable does not override the file");
  assert.equal(c.snapshotter, "native");
  assert.deepEqual(c.listen, { host: "::1", port: 8181 });
  assert.equal(c.dataRoot, path.join(cwd, "data"));
  assert.equal(c.containerdAddress, "/tmp/ctrd/containerd.sock");
  assert.equal(c.runtimePath, "/opt/rt");
  assert.equal(c.pullPolicy, "never");
  assert.deepEqual(c.cniBinDirs, ["/a", "/b"]);
  assert.equal(c.cniIsolation, false);

  for (const argv of [["--config", "other.toml"], [`--config=${other}`]]) {
    const o = loadConfig({ argv, env: {}, cwd });
    assert.equal(o.configFile, other);
    assert.equal(o.namespace, "from-other");
    assert.equal(o.cniConfDir, "/etc/other-cni");
    assert.equal(o.image, DEFAULT_IMAGE, "the default file is not read when --config names another");
  }
});

test("invalid values are all reported at once, naming where they came from", async () => {
  const cwd = await workdir("bad", `[workspace]\npull_policy = "sometimes"\nnamepsace = "typo"\nlisten = 8080\n`);
  const found = problems(() =>
    loadConfig({
      env: {
        DATABASE_URL: "mysql://x",
        MEMOH_NAMESPACE: "bad namespace",
        MEMOH_CONTAINERD_ADDRESS: "relative.sock",
        MEMOH_CNI_ISOLATION: "maybe",
        MEMOH_CNI_FIREWALL: "sometimes",
        MEMOH_ADMIN_TOKEN: "short",
      },
      cwd,
    }),
  );
  const file = path.join(cwd, "memoh-workspace.toml");
  const expected = [
    new RegExp(`${file} \\[workspace\\]\\.namepsace: unknown key`),
    new RegExp(`${file} \\[workspace\\]\\.listen: expected a string`),
    new RegExp(`${file} \\[workspace\\]\\.pull_policy: pull policy must be if_not_present, always or never`),
    /\$DATABASE_URL: expected a postgres:\/\/ or postgresql:\/\/ URL/,
    /\$MEMOH_NAMESPACE: invalid containerd namespace "bad namespace"/,
    /\$MEMOH_CONTAINERD_ADDRESS: expected the absolute path/,
    /\$MEMOH_CNI_ISOLATION: expected on\/off/,
    /\$MEMOH_CNI_FIREWALL: expected on\/off/,
    /\$MEMOH_ADMIN_TOKEN: an admin token needs at least 16 characters/,
  ];
  for (const re of expected) assert.ok(found.some((p) => re.test(p)), `missing ${re} in:\n${found.join("\n")}`);
  assert.equal(found.length, expected.length, found.join("\n"));
});

test("a missing --config file and broken TOML are clear errors", async () => {
  const cwd = await workdir("missing");
  assert.match(problems(() => loadConfig({ argv: ["--config", "nope.toml"], env: {}, cwd }))[0]!, /nope\.toml \(from --config\) does not exist/);
  assert.match(problems(() => loadConfig({ argv: ["--config"], env: {}, cwd }))[0]!, /--config needs a file name/);
  const broken = await workdir("broken", `[workspace\nlisten = "x"`);
  assert.match(problems(() => loadConfig({ env: {}, cwd: broken }))[0]!, /memoh-workspace\.toml is not valid TOML/);
});

test("listen addresses", () => {
  assert.deepEqual(parseListen("127.0.0.1:8080"), { host: "127.0.0.1", port: 8080 });
  assert.deepEqual(parseListen(":8080"), { host: "0.0.0.0", port: 8080 });
  assert.deepEqual(parseListen("[::]:80"), { host: "::", port: 80 });
  assert.deepEqual(parseListen("localhost:1"), { host: "localhost", port: 1 });
  assert.equal(typeof parseListen("8080"), "string");
  assert.equal(typeof parseListen("host:99999"), "string");
  assert.equal(typeof parseListen("::1:80"), "string");
});

test("registry_ca / MEMOH_REGISTRY_CA: a PEM bundle, resolved like the other paths; the variable wins", async () => {
  const cwd = await workdir("ca", `[workspace]\nregistry_ca = "certs/ca.pem"\n`);
  await fs.mkdir(path.join(cwd, "certs"));
  // Any real certificates will do: two of Node's bundled roots, with a comment between them.
  await fs.writeFile(path.join(cwd, "certs", "ca.pem"), `${tls.rootCertificates[0]}\n# second\n${tls.rootCertificates[1]}\n`);
  assert.equal(loadConfig({ env: {}, cwd }).registryCa, path.join(cwd, "certs", "ca.pem"));
  const other = path.join(cwd, "other.pem");
  await fs.writeFile(other, tls.rootCertificates[2]!);
  assert.equal(loadConfig({ env: { MEMOH_REGISTRY_CA: "other.pem" }, cwd }).registryCa, other);
});

test("registry_ca problems: missing file, no certificate, broken certificate, all reported with the others", async () => {
  const cwd = await workdir("bad-ca", `[workspace]\nregistry_ca = "missing.pem"\npull_policy = "sometimes"\n`);
  const file = path.join(cwd, "memoh-workspace.toml");
  const fromFile = problems(() => loadConfig({ env: {}, cwd }));
  assert.equal(fromFile.length, 2, fromFile.join("\n"));
  assert.ok(fromFile.some((p) => p === `${file} [workspace].registry_ca: CA bundle ${path.join(cwd, "missing.pem")} does not exist`), fromFile.join("\n"));
  assert.ok(fromFile.some((p) => /pull_policy: pull policy must be/.test(p)), fromFile.join("\n"));

  await fs.writeFile(path.join(cwd, "empty.pem"), "just text, no certificate\n");
  assert.deepEqual(problems(() => loadConfig({ env: { MEMOH_REGISTRY_CA: "empty.pem", MEMOH_PULL_POLICY: "never" }, cwd })), [
    `$MEMOH_REGISTRY_CA: CA bundle ${path.join(cwd, "empty.pem")} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`,
  ]);

  await fs.writeFile(path.join(cwd, "broken.pem"), `${tls.rootCertificates[0]}\n-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n`);
  const broken = problems(() => loadConfig({ env: { MEMOH_REGISTRY_CA: "broken.pem", MEMOH_PULL_POLICY: "never" }, cwd }));
  assert.equal(broken.length, 1, broken.join("\n"));
  assert.match(broken[0]!, /^\$MEMOH_REGISTRY_CA: CA bundle .*broken\.pem: certificate 2 is not valid/);

  assert.match(problems(() => loadConfig({ env: { MEMOH_REGISTRY_CA: cwd, MEMOH_PULL_POLICY: "never" }, cwd }))[0]!, /\$MEMOH_REGISTRY_CA: cannot read CA bundle/);
});

test("registry_insecure / MEMOH_REGISTRY_INSECURE: registry hosts allowed plain HTTP; anything else is refused", async () => {
  const cwd = await workdir("insecure", `[workspace]\nregistry_insecure = ["registry.lan:5000", "10.0.0.7"]\n`);
  assert.deepEqual(loadConfig({ env: {}, cwd }).registryInsecure, ["registry.lan:5000", "10.0.0.7"]);
  assert.deepEqual(loadConfig({ env: { MEMOH_REGISTRY_INSECURE: " a.lan , [fd00::1]:5000," }, cwd }).registryInsecure, ["a.lan", "[fd00::1]:5000"]);
  const found = problems(() => loadConfig({ env: { MEMOH_REGISTRY_INSECURE: "http://a.lan,b.lan/x" }, cwd }));
  assert.ok(found.some((p) => /\$MEMOH_REGISTRY_INSECURE: "http:\/\/a\.lan" is not a registry host/.test(p)), found.join("\n"));
  assert.ok(found.some((p) => /"b\.lan\/x" is not a registry host/.test(p)), found.join("\n"));
});

test("mcp_session_idle_s and mcp_allowed_hosts: the tool gateway's session idle time and extra host names", async () => {
  const cwd = await workdir("mcp", `[workspace]\nmcp_session_idle_s = 90\nmcp_allowed_hosts = ["Tools.Example.com", "proxy"]\n`);
  const fromFile = loadConfig({ env: {}, cwd });
  assert.equal(fromFile.mcpSessionIdleMs, 90_000);
  assert.deepEqual(fromFile.mcpAllowedHosts, ["tools.example.com", "proxy"]);
  const fromEnv = loadConfig({ env: { MEMOH_MCP_SESSION_IDLE_S: "0.5", MEMOH_MCP_ALLOWED_HOSTS: " a.lan , b.lan," }, cwd });
  assert.equal(fromEnv.mcpSessionIdleMs, 500);
  assert.deepEqual(fromEnv.mcpAllowedHosts, ["a.lan", "b.lan"]);
  const found = problems(() => loadConfig({ env: { MEMOH_MCP_SESSION_IDLE_S: "0", MEMOH_MCP_ALLOWED_HOSTS: "http://a.lan,b.lan:80" }, cwd }));
  assert.ok(found.some((p) => /\$MEMOH_MCP_SESSION_IDLE_S: expected a number more than 0/.test(p)), found.join("\n"));
  assert.ok(found.some((p) => /"http:\/\/a\.lan" is not a host name/.test(p)), found.join("\n"));
  assert.ok(found.some((p) => /"b\.lan:80" is not a host name/.test(p)), found.join("\n"));
});

test("import_max_mb / import_max_entries: the caps of an imported archive, the environment winning; bad values named", async () => {
  const cwd = await workdir("import-caps", "[workspace]\nimport_max_mb = 64\nimport_max_entries = 500\n");
  const fromFile = loadConfig({ env: {}, cwd });
  assert.equal(fromFile.importMaxBytes, 64 * 1024 * 1024);
  assert.equal(fromFile.importMaxEntries, 500);
  const fromEnv = loadConfig({ env: { MEMOH_IMPORT_MAX_MB: "2", MEMOH_IMPORT_MAX_ENTRIES: "7" }, cwd });
  assert.equal(fromEnv.importMaxBytes, 2 * 1024 * 1024);
  assert.equal(fromEnv.importMaxEntries, 7);
  const bad = problems(() => loadConfig({ env: { MEMOH_IMPORT_MAX_MB: "0", MEMOH_IMPORT_MAX_ENTRIES: "many" }, cwd }));
  assert.equal(bad.length, 2, bad.join("\n"));
  assert.ok(bad.some((p) => p.includes("MEMOH_IMPORT_MAX_MB")), bad.join("\n"));
  assert.ok(bad.some((p) => p.includes("MEMOH_IMPORT_MAX_ENTRIES")), bad.join("\n"));
});

test("limits, lock timeout, event and task-log retention: from the file, the environment winning", async () => {
  const cwd = await workdir(
    "limits",
    `
[workspace]
limit_memory_mb = 512
limit_cpus = 0.5
limit_pids = 256
lock_timeout_ms = 30000
events_keep = 50
task_log_max_mb = 3
task_log_keep = 0
`,
  );
  const fromFile = loadConfig({ env: {}, cwd });
  assert.deepEqual(fromFile.limits, { memoryBytes: 512 * 1024 * 1024, cpus: 0.5, pids: 256 });
  assert.equal(fromFile.lockTimeoutMs, 30_000);
  assert.equal(fromFile.eventsKeep, 50);
  assert.equal(fromFile.taskLogMaxBytes, 3 * 1024 * 1024);
  assert.equal(fromFile.taskLogKeep, 0);

  const fromEnv = loadConfig({
    env: {
      MEMOH_LIMIT_MEMORY_MB: "16",
      MEMOH_LIMIT_CPUS: "3",
      MEMOH_LIMIT_PIDS: " 4096 ",
      MEMOH_LOCK_TIMEOUT_MS: "100",
      MEMOH_EVENTS_KEEP: "10",
      MEMOH_TASK_LOG_MAX_MB: "1",
      MEMOH_TASK_LOG_KEEP: "20",
    },
    cwd,
  });
  assert.deepEqual(fromEnv.limits, { memoryBytes: 16 * 1024 * 1024, cpus: 3, pids: 4096 });
  assert.equal(fromEnv.lockTimeoutMs, 100);
  assert.equal(fromEnv.eventsKeep, 10);
  assert.equal(fromEnv.taskLogMaxBytes, 1024 * 1024);
  assert.equal(fromEnv.taskLogKeep, 20);

  // One variable overrides its own setting only; fractional CPUs and a quoted number in the file work.
  const mixed = await workdir("limits-mixed", `[workspace]\nlimit_cpus = "1.25"\nlimit_pids = 100\n`);
  const m = loadConfig({ env: { MEMOH_LIMIT_CPUS: ".75" }, cwd: mixed });
  assert.deepEqual(m.limits, { memoryBytes: 2048 * 1024 * 1024, cpus: 0.75, pids: 100 });
  assert.equal(loadConfig({ env: {}, cwd: mixed }).limits.cpus, 1.25);
});

test("each invalid limit or retention value is a clear error naming where it came from", async () => {
  const cases: Array<[string, string, RegExp]> = [
    ["MEMOH_LIMIT_MEMORY_MB", "15", /^\$MEMOH_LIMIT_MEMORY_MB: expected an integer from 16 to 4294967296 \(MiB\), got "15"$/],
    ["MEMOH_LIMIT_MEMORY_MB", "2048.5", /^\$MEMOH_LIMIT_MEMORY_MB: expected an integer from 16/],
    ["MEMOH_LIMIT_MEMORY_MB", "2g", /^\$MEMOH_LIMIT_MEMORY_MB: expected an integer from 16 .* got "2g"$/],
    ["MEMOH_LIMIT_MEMORY_MB", "4294967297", /^\$MEMOH_LIMIT_MEMORY_MB: expected an integer from 16 to 4294967296/],
    ["MEMOH_LIMIT_CPUS", "0", /^\$MEMOH_LIMIT_CPUS: expected a number more than 0 and at most 1024 \(CPUs\), got "0"$/],
    ["MEMOH_LIMIT_CPUS", "-1", /^\$MEMOH_LIMIT_CPUS: expected a number more than 0 and at most 1024/],
    ["MEMOH_LIMIT_CPUS", "1024.5", /^\$MEMOH_LIMIT_CPUS: expected a number more than 0 and at most 1024/],
    ["MEMOH_LIMIT_CPUS", "NaN", /^\$MEMOH_LIMIT_CPUS: expected a number/],
    ["MEMOH_LIMIT_CPUS", "1e3", /^\$MEMOH_LIMIT_CPUS: expected a number/],
    ["MEMOH_LIMIT_PIDS", "15", /^\$MEMOH_LIMIT_PIDS: expected an integer from 16 to 4194304 \(processes\), got "15"$/],
    ["MEMOH_LIMIT_PIDS", "many", /^\$MEMOH_LIMIT_PIDS: expected an integer from 16/],
    ["MEMOH_LOCK_TIMEOUT_MS", "99", /^\$MEMOH_LOCK_TIMEOUT_MS: expected an integer from 100 to 2147483647 \(ms\), got "99"$/],
    ["MEMOH_LOCK_TIMEOUT_MS", "2147483648", /^\$MEMOH_LOCK_TIMEOUT_MS: expected an integer from 100 to 2147483647/],
    ["MEMOH_EVENTS_KEEP", "9", /^\$MEMOH_EVENTS_KEEP: expected an integer from 10 to 2147483647 \(events\), got "9"$/],
    ["MEMOH_TASK_LOG_MAX_MB", "0", /^\$MEMOH_TASK_LOG_MAX_MB: expected an integer from 1 to 4294967296 \(MiB\), got "0"$/],
    ["MEMOH_TASK_LOG_MAX_MB", "0.5", /^\$MEMOH_TASK_LOG_MAX_MB: expected an integer from 1/],
    ["MEMOH_TASK_LOG_KEEP", "21", /^\$MEMOH_TASK_LOG_KEEP: expected an integer from 0 to 20 \(files\), got "21"$/],
    ["MEMOH_TASK_LOG_KEEP", "-1", /^\$MEMOH_TASK_LOG_KEEP: expected an integer from 0 to 20/],
    ["MEMOH_MCP_STDIO_IDLE_S", "0", /^\$MEMOH_MCP_STDIO_IDLE_S: expected a number more than 0 and at most 2147483 \(s\), got "0"$/],
    ["MEMOH_MCP_STDIO_IDLE_S", "10m", /^\$MEMOH_MCP_STDIO_IDLE_S: expected a number more than 0/],
    ["MEMOH_JOB_MAX_RUNTIME_S", "0", /^\$MEMOH_JOB_MAX_RUNTIME_S: expected an integer from 1 to 2147483 \(s\), got "0"$/],
    ["MEMOH_JOB_MAX_RUNTIME_S", "1.5", /^\$MEMOH_JOB_MAX_RUNTIME_S: expected an integer from 1/],
    ["MEMOH_JOB_RETENTION_S", "2147484", /^\$MEMOH_JOB_RETENTION_S: expected an integer from 1 to 2147483 \(s\), got "2147484"$/],
  ];
  const cwd = await workdir("bad-limits");
  assert.equal(loadConfig({ env: { MEMOH_MCP_STDIO_IDLE_S: "1.5" }, cwd }).mcpStdioIdleMs, 1500);
  const jobs = loadConfig({ env: { MEMOH_JOB_MAX_RUNTIME_S: "600", MEMOH_JOB_RETENTION_S: "60" }, cwd });
  assert.deepEqual([jobs.jobMaxRuntimeMs, jobs.jobRetentionMs], [600_000, 60_000]);
  for (const [name, value, re] of cases) {
    const found = problems(() => loadConfig({ env: { [name]: value }, cwd }));
    assert.equal(found.length, 1, `${name}=${value}: ${found.join("\n")}`);
    assert.match(found[0]!, re, `${name}=${value}`);
  }

  // In the file: wrong types and values, all reported at once with the file and key.
  const bad = await workdir(
    "bad-limits-file",
    `[workspace]\nlimit_memory_mb = 8\nlimit_cpus = 0\nlimit_pids = true\nlock_timeout_ms = 1.5\nevents_keep = [100]\ntask_log_max_mb = "big"\ntask_log_keep = 21\n`,
  );
  const file = path.join(bad, "memoh-workspace.toml");
  const found = problems(() => loadConfig({ env: {}, cwd: bad }));
  const expected = [
    `${file} [workspace].limit_memory_mb: expected an integer from 16 to 4294967296 (MiB), got 8`,
    `${file} [workspace].limit_cpus: expected a number more than 0 and at most 1024 (CPUs), got 0`,
    `${file} [workspace].limit_pids: expected an integer from 16 to 4194304 (processes), got true`,
    `${file} [workspace].lock_timeout_ms: expected an integer from 100 to 2147483647 (ms), got 1.5`,
    `${file} [workspace].events_keep: expected an integer from 10 to 2147483647 (events), got [100]`,
    `${file} [workspace].task_log_max_mb: expected an integer from 1 to 4294967296 (MiB), got "big"`,
    `${file} [workspace].task_log_keep: expected an integer from 0 to 20 (files), got 21`,
  ];
  assert.deepEqual([...found].sort(), [...expected].sort());

  // A variable wins over a bad number in the file; a value of the wrong type (not a number or
  // a string) is a broken file and reported anyway, like every other key's.
  assert.deepEqual(
    problems(() =>
      loadConfig({
        env: { MEMOH_LIMIT_MEMORY_MB: "64", MEMOH_LIMIT_CPUS: "1", MEMOH_LIMIT_PIDS: "64", MEMOH_LOCK_TIMEOUT_MS: "1000", MEMOH_EVENTS_KEEP: "100", MEMOH_TASK_LOG_MAX_MB: "5" },
        cwd: bad,
      }),
    ).sort(),
    [
      `${file} [workspace].events_keep: expected an integer from 10 to 2147483647 (events), got [100]`,
      `${file} [workspace].limit_pids: expected an integer from 16 to 4194304 (processes), got true`,
      `${file} [workspace].task_log_keep: expected an integer from 0 to 20 (files), got 21`,
    ],
  );
});
