// McpStdioStart, validated into a spawn, with the same rules as Exec (argv form,
// inherited environment, toolkit on PATH so `npx …` works in any image).
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { invalidArgument } from "../errors.js";
import { resolveDir } from "../paths.js";
import { buildEnv, validateEnvRequest } from "../exec/env.js";
import { spawnGroupLeader } from "../exec/process.js";

export interface McpServerSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

export function parseMcpStart(dataDir: string, start: pb.McpStdioStart): McpServerSpec {
  if (start.command === "") throw invalidArgument("empty command");
  if (start.command.includes("\0")) throw invalidArgument("command contains a NUL byte");
  start.args.forEach((arg, i) => {
    if (arg.includes("\0")) throw invalidArgument(`args[${i}] contains a NUL byte`);
  });
  const envRequest = { set: start.env };
  validateEnvRequest(envRequest);
  return { command: start.command, args: start.args, env: buildEnv(envRequest), cwd: resolveDir(dataDir, start.cwd) };
}

/** Starts the server in its own process group; rejects with NOT_FOUND etc. when it cannot. */
export function spawnMcpServer(spec: McpServerSpec): Promise<ChildProcessWithoutNullStreams> {
  return spawnGroupLeader(
    { file: spec.command, cwd: spec.cwd, viaShell: false, pathValue: spec.env.PATH },
    spec.args,
    spec.env,
  );
}
