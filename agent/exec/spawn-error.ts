// Why a process could not start, as a status the caller can act on. The kernel
// answers ENOENT both for a missing program and for a missing cwd, so the cwd is
// looked at only here, on the failure path, and not before every spawn.
import fs from "node:fs/promises";
import { RpcError, Status, failedPrecondition, fromErrno, notFound } from "../errors.js";
import { SHELL } from "./command.js";

export interface SpawnTarget {
  file: string;
  cwd: string;
  /** The program is SHELL running a `command`. */
  viaShell: boolean;
  /** The child's PATH, named in "not found" messages for bare program names. */
  pathValue: string | undefined;
}

function errnoCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** NOT_FOUND / FAILED_PRECONDITION / PERMISSION_DENIED when cwd is not a usable directory. */
export async function checkCwd(cwd: string): Promise<RpcError | undefined> {
  try {
    const st = await fs.stat(cwd);
    if (!st.isDirectory()) return failedPrecondition(`cwd ${cwd}: not a directory`);
    await fs.access(cwd, fs.constants.X_OK);
    return undefined;
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") return notFound(`cwd ${cwd}: no such directory`);
    if (code === "ENOTDIR") return failedPrecondition(`cwd ${cwd}: a parent is not a directory`);
    if (code === "EACCES") return new RpcError(Status.PERMISSION_DENIED, `cwd ${cwd}: permission denied`);
    return fromErrno(err) ?? new RpcError(Status.INTERNAL, `cwd ${cwd}: ${String(err)}`);
  }
}

export function programNotFound(target: SpawnTarget): RpcError {
  if (target.viaShell) {
    return failedPrecondition(`${SHELL} not found: this image has no shell; send argv instead of command`);
  }
  if (target.file.includes("/")) return notFound(`${target.file}: no such file`);
  return notFound(`${target.file}: command not found (PATH=${target.pathValue ?? ""})`);
}

export function programNotExecutable(target: SpawnTarget): RpcError {
  return new RpcError(Status.PERMISSION_DENIED, `${target.file}: permission denied (not an executable file)`);
}

/** Maps a spawn error (thrown, or emitted as 'error') to a status naming what is wrong. */
export async function spawnFailure(err: unknown, target: SpawnTarget): Promise<RpcError> {
  const code = errnoCode(err);
  if (code === "ENOENT" || code === "EACCES" || code === "ENOTDIR") {
    const cwdProblem = await checkCwd(target.cwd);
    if (cwdProblem) return cwdProblem;
  }
  switch (code) {
    case "ENOENT":
      return programNotFound(target);
    case "EACCES":
    case "EISDIR":
      return programNotExecutable(target);
    case "ENOTDIR":
      return notFound(`${target.file}: a path component is not a directory`);
    case "ENOEXEC":
      return failedPrecondition(`${target.file}: exec format error (not a binary for this machine, or a script without #!)`);
  }
  const mapped = fromErrno(err);
  const why = mapped?.message ?? (err instanceof Error ? err.message : String(err));
  return new RpcError(mapped?.code ?? Status.INTERNAL, `cannot start ${target.file}: ${why}`, { cause: err });
}
