// The `[workspace]` settings: each key, the environment variable that overrides it and,
// for numbers, the rule its value must meet; and reading them from the TOML file
// (`--config`). config.ts combines file and environment into a checked Config.
import fs from "node:fs";
import path from "node:path";
import { parse as parseToml } from "smol-toml";

/** `[workspace]` keys and the environment variable that overrides each. */
export const KEYS = {
  listen: "MEMOH_LISTEN",
  admin_token: "MEMOH_ADMIN_TOKEN",
  database_url: "DATABASE_URL",
  data_root: "MEMOH_DATA_ROOT",
  containerd_address: "MEMOH_CONTAINERD_ADDRESS",
  namespace: "MEMOH_NAMESPACE",
  snapshotter: "MEMOH_SNAPSHOTTER",
  runtime_path: "MEMOH_RUNTIME_PATH",
  image: "MEMOH_IMAGE",
  pull_policy: "MEMOH_PULL_POLICY",
  cni_conf_dir: "MEMOH_CNI_CONF_DIR",
  cni_bin_dir: "MEMOH_CNI_BIN_DIR",
  registry_auth: "MEMOH_REGISTRY_AUTH",
  registry_ca: "MEMOH_REGISTRY_CA",
  registry_insecure: "MEMOH_REGISTRY_INSECURE",
  cni_isolation: "MEMOH_CNI_ISOLATION",
  cni_firewall: "MEMOH_CNI_FIREWALL",
  cni_block_host: "MEMOH_CNI_BLOCK_HOST",
  cni_block_metadata: "MEMOH_CNI_BLOCK_METADATA",
  limit_memory_mb: "MEMOH_LIMIT_MEMORY_MB",
  limit_cpus: "MEMOH_LIMIT_CPUS",
  limit_pids: "MEMOH_LIMIT_PIDS",
  lock_timeout_ms: "MEMOH_LOCK_TIMEOUT_MS",
  events_keep: "MEMOH_EVENTS_KEEP",
  task_log_max_mb: "MEMOH_TASK_LOG_MAX_MB",
  task_log_keep: "MEMOH_TASK_LOG_KEEP",
  upload_max_mb: "MEMOH_UPLOAD_MAX_MB",
  import_max_mb: "MEMOH_IMPORT_MAX_MB",
  import_max_entries: "MEMOH_IMPORT_MAX_ENTRIES",
  mcp_session_idle_s: "MEMOH_MCP_SESSION_IDLE_S",
  mcp_allowed_hosts: "MEMOH_MCP_ALLOWED_HOSTS",
  mcp_stdio_idle_s: "MEMOH_MCP_STDIO_IDLE_S",
  job_max_runtime_s: "MEMOH_JOB_MAX_RUNTIME_S",
  job_retention_s: "MEMOH_JOB_RETENTION_S",
} as const;

export type NumericKey =
  | "limit_memory_mb"
  | "limit_cpus"
  | "limit_pids"
  | "lock_timeout_ms"
  | "events_keep"
  | "task_log_max_mb"
  | "task_log_keep"
  | "upload_max_mb"
  | "import_max_mb"
  | "import_max_entries"
  | "mcp_session_idle_s"
  | "mcp_stdio_idle_s"
  | "job_max_runtime_s"
  | "job_retention_s";

interface NumberRule {
  integer: boolean;
  min: number;
  /** Whether min itself is allowed (cpus: more than 0). */
  minInclusive: boolean;
  max: number;
  unit: string;
}

/**
 * The numeric settings. The upper bounds keep derived values exact and usable: bytes stay safe
 * integers, a lock timeout fits a Node timer (a longer one fires at once), pids.max cannot
 * exceed the kernel's PID_MAX_LIMIT.
 */
export const NUMBER_RULES: Record<NumericKey, NumberRule> = {
  limit_memory_mb: { integer: true, min: 16, minInclusive: true, max: 2 ** 32, unit: "MiB" },
  limit_cpus: { integer: false, min: 0, minInclusive: false, max: 1024, unit: "CPUs" },
  limit_pids: { integer: true, min: 16, minInclusive: true, max: 4_194_304, unit: "processes" },
  lock_timeout_ms: { integer: true, min: 100, minInclusive: true, max: 2 ** 31 - 1, unit: "ms" },
  events_keep: { integer: true, min: 10, minInclusive: true, max: 2 ** 31 - 1, unit: "events" },
  task_log_max_mb: { integer: true, min: 1, minInclusive: true, max: 2 ** 32, unit: "MiB" },
  task_log_keep: { integer: true, min: 0, minInclusive: true, max: 20, unit: "files" },
  upload_max_mb: { integer: true, min: 1, minInclusive: true, max: 2 ** 32, unit: "MiB" },
  import_max_mb: { integer: true, min: 1, minInclusive: true, max: 2 ** 32, unit: "MiB" },
  import_max_entries: { integer: true, min: 1, minInclusive: true, max: 2 ** 31 - 1, unit: "entries" },
  mcp_session_idle_s: { integer: false, min: 0, minInclusive: false, max: 2_147_483, unit: "s" },
  mcp_stdio_idle_s: { integer: false, min: 0, minInclusive: false, max: 2_147_483, unit: "s" },
  // Whole seconds: the agent takes milliseconds as integers, and a job's timer must fit a Node timer.
  job_max_runtime_s: { integer: true, min: 1, minInclusive: true, max: 2_147_483, unit: "s" },
  job_retention_s: { integer: true, min: 1, minInclusive: true, max: 2_147_483, unit: "s" },
};

function isNumericKey(key: string): key is NumericKey {
  return key in NUMBER_RULES;
}

/** The rule as words: "an integer from 16 to 4294967296 (MiB)", "a number more than 0 and at most 1024 (CPUs)". */
function describeRule(rule: NumberRule): string {
  const what = rule.integer ? "an integer" : "a number";
  const range = rule.minInclusive ? `from ${rule.min} to ${rule.max}` : `more than ${rule.min} and at most ${rule.max}`;
  return `${what} ${range} (${rule.unit})`;
}

/** Parses a numeric setting (a TOML number, or the text of a variable); returns an error text when invalid. */
export function parseNumberSetting(value: unknown, rule: NumberRule): number | string {
  let n: number;
  if (typeof value === "number") n = value;
  else if (typeof value === "bigint") n = Number(value);
  else if (typeof value === "string" && /^\+?(\d+(\.\d*)?|\.\d+)$/.test(value.trim())) n = Number(value.trim());
  else return `expected ${describeRule(rule)}, got ${JSON.stringify(typeof value === "bigint" ? String(value) : value)}`;
  const ok =
    Number.isFinite(n) &&
    (!rule.integer || Number.isInteger(n)) &&
    (rule.minInclusive ? n >= rule.min : n > rule.min) &&
    n <= rule.max;
  return ok ? n : `expected ${describeRule(rule)}, got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`;
}

export type Key = keyof typeof KEYS;

/** `--config <file>` or `--config=<file>` from argv. */
export function configArg(argv: readonly string[], problems: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--config") {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) problems.push("--config needs a file name");
      else return next;
    } else if (arg.startsWith("--config=")) {
      const value = arg.slice("--config=".length);
      if (!value) problems.push("--config needs a file name");
      else return value;
    }
  }
  return undefined;
}

export interface RawValue {
  value: string | boolean | string[] | number;
  /** Where it came from, for error messages. */
  source: string;
  /** Relative paths resolve against this dir. */
  baseDir: string;
}

export function readFileSection(file: string, problems: string[]): Map<Key, RawValue> {
  const values = new Map<Key, RawValue>();
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    problems.push(`cannot read config file ${file}: ${(err as Error).message}`);
    return values;
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (err) {
    problems.push(`config file ${file} is not valid TOML: ${(err as Error).message}`);
    return values;
  }
  const section = doc.workspace;
  if (section === undefined) return values;
  if (typeof section !== "object" || section === null || Array.isArray(section)) {
    problems.push(`${file}: [workspace] must be a table`);
    return values;
  }
  const baseDir = path.dirname(file);
  for (const [key, value] of Object.entries(section as Record<string, unknown>)) {
    const source = `${file} [workspace].${key}`;
    if (!(key in KEYS)) {
      problems.push(`${source}: unknown key (known: ${Object.keys(KEYS).join(", ")})`);
      continue;
    }
    if (isNumericKey(key)) {
      // Numbers are checked with their rule below; a quoted number ("2048") is accepted too.
      if (typeof value === "number" || typeof value === "string") values.set(key, { value, source, baseDir });
      else if (typeof value === "bigint") values.set(key, { value: Number(value), source, baseDir });
      else problems.push(`${source}: expected ${describeRule(NUMBER_RULES[key])}, got ${JSON.stringify(value)}`);
    } else if (typeof value === "string" || typeof value === "boolean") {
      values.set(key as Key, { value, source, baseDir });
    } else if (Array.isArray(value) && value.every((v): v is string => typeof v === "string")) {
      values.set(key as Key, { value, source, baseDir });
    } else {
      problems.push(`${source}: expected a string${key.startsWith("cni_") && key !== "cni_conf_dir" && key !== "cni_bin_dir" ? " or boolean" : ""}, got ${JSON.stringify(value)}`);
    }
  }
  return values;
}
