// The environment of every process the agent spawns (Exec and McpStdio).
//
// Order: the agent's own environment (or nothing, with clean_env), minus the
// agent's private settings, minus unset_env, plus env; then PATH gets the runtime
// toolkit (node, npm, npx) appended. Appended, not prepended: tools the image
// ships win, and the toolkit fills in where the image has none (a distroless or
// busybox image running `npx some-mcp-server`).
import path from "node:path";
import { invalidArgument } from "../errors.js";
import { toolkitBinDir } from "../runtime-paths.js";

/** PATH for a process whose environment has none (Debian's and Alpine's default). */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * The agent's own configuration (DESIGN.md, "Configuration"). It means nothing to a
 * workspace process and would only mislead one that reads it, so it is not
 * inherited; a request may still set these names explicitly through env.
 */
const AGENT_PRIVATE_VARS = ["BRIDGE_SOCKET_PATH", "BRIDGE_TCP_ADDR", "BRIDGE_DATA_DIR"] as const;

export interface EnvRequest {
  /** Start from an empty environment instead of the agent's. */
  clean?: boolean;
  /** Names removed from the inherited environment. */
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
export function buildEnv(req: EnvRequest): Record<string, string> {
  const env: Record<string, string> = req.clean ? {} : ({ ...process.env } as Record<string, string>);
  if (!req.clean) for (const name of AGENT_PRIVATE_VARS) delete env[name];
  for (const name of req.unset ?? []) delete env[name];
  if (req.set) Object.assign(env, req.set);
  env.PATH = withToolkitOnPath(env.PATH);
  return env;
}

/** The directories a bare program name is looked up in, as execvp does (empty entry = cwd). */
export function searchPath(env: Readonly<Record<string, string>>, cwd: string): string[] {
  return (env.PATH ?? DEFAULT_PATH).split(":").map((dir) => path.resolve(cwd, dir || "."));
}
