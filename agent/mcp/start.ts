// McpStdioStart, validated into a spawn, with the same rules as Exec (argv form,
// the image's environment, the user, toolkit on PATH so `npx …` works in any image).
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { resolveDir } from "../paths.js";
import { checkExecSize } from "../exec/arg-max.js";
import { buildEnv, validateEnvRequest } from "../exec/env.js";
import { spawnGroupLeader } from "../exec/process.js";
import { lookupUser, parseUserSpec, spawnIds } from "../exec/user.js";

export interface McpServerSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** uid/gid for the spawn; undefined = the agent's own identity. */
  ids: { uid: number; gid: number } | undefined;
}

export async function parseMcpStart(ctx: AgentContext, start: pb.McpStdioStart): Promise<McpServerSpec> {
  if (start.command === "") throw invalidArgument("empty command");
  if (start.command.includes("\0")) throw invalidArgument("command contains a NUL byte");
  start.args.forEach((arg, i) => {
    if (arg.includes("\0")) throw invalidArgument(`args[${i}] contains a NUL byte`);
  });
  const envRequest = { set: start.env };
  validateEnvRequest(envRequest);
  const userSpec = parseUserSpec(start.user);
  const cwd = resolveDir(ctx.dataDir, start.cwd);
  const user = await lookupUser(userSpec);
  const env = buildEnv(ctx.childEnv, user, envRequest);
  checkExecSize(start.command, start.args, env);
  return { command: start.command, args: start.args, env, cwd, ids: spawnIds(user) };
}

/** Starts the server in its own process group; rejects with NOT_FOUND etc. when it cannot. */
export function spawnMcpServer(spec: McpServerSpec): Promise<ChildProcessWithoutNullStreams> {
  return spawnGroupLeader(
    { file: spec.command, cwd: spec.cwd, viaShell: false, pathValue: spec.env.PATH },
    spec.args,
    spec.env,
    spec.ids,
  );
}
