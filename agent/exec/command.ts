// ExecStart, validated once at the edge into what the spawners need.
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { PTY_MAX_DIMENSION } from "../limits.js";
import { resolveDir } from "../paths.js";
import { checkExecSize } from "./arg-max.js";
import { buildEnv, validateEnvRequest } from "./env.js";
import { lookupUser, parseUserSpec, spawnIds, type ExecUser } from "./user.js";

/** The shell a `command` runs in. */
export const SHELL = "/bin/sh";

export const DEFAULT_PTY_COLS = 80;
export const DEFAULT_PTY_ROWS = 24;

export interface ExecSpec {
  /** Program to execute (looked up on the child's PATH when it has no "/"). */
  file: string;
  args: string[];
  /** True when `file` is SHELL running the request's `command`. */
  viaShell: boolean;
  env: Record<string, string>;
  /** Who the process runs as. */
  user: ExecUser;
  /** uid/gid for the spawn; undefined = the agent's own identity. */
  ids: { uid: number; gid: number } | undefined;
  /** Absolute working directory. */
  cwd: string;
  /** 0 = no timeout. */
  timeoutMs: number;
  pty: { cols: number; rows: number } | undefined;
  stdin: Uint8Array;
  closeStdin: boolean;
}

function checkNoNul(value: string, field: string): void {
  if (value.includes("\0")) throw invalidArgument(`${field} contains a NUL byte`);
}

/** A PTY dimension from a request: 0 means `fallback`. */
export function ptyDimension(value: number, fallback: number, field: string): number {
  if (value === 0) return fallback;
  if (value > PTY_MAX_DIMENSION) throw invalidArgument(`${field} must be at most ${PTY_MAX_DIMENSION}`);
  return value;
}

export async function parseExecStart(ctx: AgentContext, start: pb.ExecStart): Promise<ExecSpec> {
  const hasArgv = start.argv.length > 0;
  const hasCommand = start.command !== "";
  if (!hasArgv && !hasCommand) throw invalidArgument("empty command: set argv or command");
  if (hasArgv && hasCommand) throw invalidArgument("set either argv or command, not both");

  let file: string;
  let args: string[];
  if (hasArgv) {
    start.argv.forEach((arg, i) => checkNoNul(arg, `argv[${i}]`));
    file = start.argv[0]!;
    if (file === "") throw invalidArgument("empty command: argv[0] is empty");
    args = start.argv.slice(1);
  } else {
    checkNoNul(start.command, "command");
    file = SHELL;
    args = ["-c", start.command];
  }

  const envRequest = { clean: start.cleanEnv, unset: start.unsetEnv, set: start.env };
  validateEnvRequest(envRequest);
  const userSpec = parseUserSpec(start.user);
  const cwd = resolveDir(ctx.dataDir, start.cwd);
  const pty = start.pty
    ? {
        cols: ptyDimension(start.ptySize?.cols ?? 0, DEFAULT_PTY_COLS, "pty_size.cols"),
        rows: ptyDimension(start.ptySize?.rows ?? 0, DEFAULT_PTY_ROWS, "pty_size.rows"),
      }
    : undefined;

  const user = await lookupUser(userSpec);
  const env = buildEnv(ctx.childEnv, user, envRequest);
  checkExecSize(file, args, env);
  return {
    file,
    args,
    viaShell: hasCommand,
    env,
    user,
    ids: spawnIds(user),
    cwd,
    timeoutMs: start.timeoutMs,
    pty,
    stdin: start.stdin,
    closeStdin: start.closeStdin,
  };
}
