// The environment of every process the agent spawns (Exec, Exec on a pty, McpStdio).
//
// The base: the image's ENV, which the host hands the agent as BRIDGE_IMAGE_ENV
// (a JSON array of "NAME=value", the image config's Env). The agent's own
// environment is the host's, not the image's, and never reaches a child: an
// image's NODE_OPTIONS or LD_PRELOAD applies to the image's programs, not to
// the agent, and the agent's settings mean nothing to a workspace process.
// Without BRIDGE_IMAGE_ENV (a container created by an older host, whose agent
// environment is the image's plus the agent's settings), the base is the
// agent's environment minus every BRIDGE_* setting.
//
// Then HOME, USER and LOGNAME of the user the process runs as (HOME: an image
// that sets HOME keeps it, as under Docker; otherwise the passwd entry's home,
// else "/"). clean_env drops this whole base. Then unset_env removes names,
// env sets them, and PATH gets the runtime toolkit (node, npm, npx) appended.
// Appended, not prepended: tools the image ships win, and the toolkit fills in
// where the image has none (a distroless or busybox image running `npx some-mcp-server`).
import path from "node:path";
import { invalidArgument } from "../errors.js";
import { toolkitBinDir } from "../runtime-paths.js";
import type { ExecUser } from "./user.js";

/** PATH for a process whose environment has none (Debian's and Alpine's default). */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The agent's own settings are named BRIDGE_*; none of them is inherited. */
export function isAgentSetting(name: string): boolean {
  return name.startsWith("BRIDGE_");
}

/** Where a spawned process's environment starts. */
export type EnvBase =
  /** BRIDGE_IMAGE_ENV was given: the image's variables, and nothing of the agent's. */
  | { kind: "image"; vars: Readonly<Record<string, string>> }
  /** An older host: the agent's environment (read at each spawn) minus its settings. */
  | { kind: "inherited" };

export interface ParsedImageEnv {
  vars: Record<string, string>;
  /** One line saying what was wrong and ignored, when something was. */
  problem: string | undefined;
}

/**
 * Parses BRIDGE_IMAGE_ENV. Never throws: the agent must start whatever the
 * host passed. Invalid JSON, a non-array or a non-string entry make the whole
 * value count as empty; a string that is not NAME=value (no "=", empty name,
 * NUL) is skipped on its own. A later duplicate wins.
 */
export function parseImageEnv(raw: string): ParsedImageEnv {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    return { vars: {}, problem: `BRIDGE_IMAGE_ENV is not valid JSON (${(err as Error).message}); using an empty image environment` };
  }
  if (!Array.isArray(parsed)) return { vars: {}, problem: "BRIDGE_IMAGE_ENV is not a JSON array; using an empty image environment" };
  const bad = parsed.findIndex((entry) => typeof entry !== "string");
  if (bad >= 0) {
    return { vars: {}, problem: `BRIDGE_IMAGE_ENV entry ${bad} is not a string; using an empty image environment` };
  }
  const vars: Record<string, string> = {};
  const skipped: number[] = [];
  (parsed as string[]).forEach((entry, i) => {
    const eq = entry.indexOf("=");
    if (eq <= 0 || entry.includes("\0")) {
      skipped.push(i);
      return;
    }
    vars[entry.slice(0, eq)] = entry.slice(eq + 1);
  });
  const problem = skipped.length > 0 ? `BRIDGE_IMAGE_ENV entries ${skipped.join(", ")} are not NAME=value; skipped them` : undefined;
  return { vars, problem };
}

/** The base environment when the host passed none (older hosts): the agent's own, minus its settings. */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !isAgentSetting(name)) env[name] = value;
  }
  return env;
}

export interface EnvRequest {
  /** Start from an empty environment instead of the base. */
  clean?: boolean;
  /** Names removed from the base. */
  unset?: readonly string[];
  /** Variables set last. */
  set?: Readonly<Record<string, string>>;
}

function checkName(name: string, field: string): void {
  if (name === "") throw invalidArgument(`${field}: empty variable name`);
  if (name.includes("\0") || name.includes("=")) {
    throw invalidArgument(`${field}: variable name ${JSON.stringify(name)} contains "=" or a NUL byte`);
  }
}

/** Rejects names and values a process environment cannot hold. */
export function validateEnvRequest(req: EnvRequest): void {
  for (const name of req.unset ?? []) checkName(name, "unset_env");
  for (const [name, value] of Object.entries(req.set ?? {})) {
    checkName(name, "env");
    if (value.includes("\0")) throw invalidArgument(`env: the value of ${name} contains a NUL byte`);
  }
}

/** `pathValue` with the toolkit bin dir as its last entry (unless already present). */
export function withToolkitOnPath(pathValue: string | undefined, toolkit = toolkitBinDir()): string {
  if (!pathValue) return `${DEFAULT_PATH}:${toolkit}`;
  if (pathValue.split(":").includes(toolkit)) return pathValue;
  return `${pathValue}:${toolkit}`;
}

/** Builds a spawned process's environment; call validateEnvRequest first. */
export function buildEnv(base: EnvBase, user: ExecUser, req: EnvRequest): Record<string, string> {
  let env: Record<string, string> = {};
  if (!req.clean) {
    env = base.kind === "image" ? { ...base.vars } : inheritedEnv();
    // The agent's HOME (inherited mode) is its own, not the user's.
    if (base.kind === "inherited" || env.HOME === undefined) env.HOME = user.home;
    env.USER = user.name;
    env.LOGNAME = user.name;
  }
  for (const name of req.unset ?? []) delete env[name];
  if (req.set) Object.assign(env, req.set);
  env.PATH = withToolkitOnPath(env.PATH);
  return env;
}

/** The directories a bare program name is looked up in, as execvp does (empty entry = cwd). */
export function searchPath(env: Readonly<Record<string, string>>, cwd: string): string[] {
  return (env.PATH ?? DEFAULT_PATH).split(":").map((dir) => path.resolve(cwd, dir || "."));
}
