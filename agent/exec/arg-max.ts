// How much argv and environment execve(2) takes, checked before a spawn so that
// a request too large for it is INVALID_ARGUMENT naming the sizes, on pipes and
// on a pty alike (node-pty's child would only print the failure and exit 1).
//
// The kernel's rule (fs/exec.c, bprm_stack_limits and copy_strings): the
// strings of argv and envp (each with its NUL) plus the program path, and a
// pointer for each string, must fit in a quarter of the stack limit (at most
// 6 MiB: three quarters of the 8 MiB _STK_LIM; at least 128 KiB); and no single
// string may be longer than MAX_ARG_STRLEN (32 pages).
import { readFileSync } from "node:fs";
import { invalidArgument } from "../errors.js";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Longest single argument or NAME=value string, NUL included (32 pages of 4 KiB). */
export const MAX_ARG_STRLEN = 128 * KiB;
/** The kernel's floor and ceiling of the total. */
const ARG_MAX_FLOOR = 128 * KiB;
const ARG_MAX_CEILING = 6 * MiB;
/** Room kept for what the spawn adds: the resolved program path, and a pty's TERM and PWD. */
const SPAWN_SLACK = 8 * KiB;

/** The soft stack limit from /proc/self/limits: bytes, Infinity when unlimited, undefined when unknown. */
export function stackLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return undefined;
    }
  }
  const line = text.split("\n").find((l) => l.startsWith("Max stack size"));
  const soft = line?.slice("Max stack size".length).trim().split(/\s+/)[0];
  if (soft === "unlimited") return Infinity;
  const n = Number(soft);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

/** The agent's stack limit, read once: children inherit it, and nothing in the agent changes it. */
let agentStack: { value: number | undefined } | undefined;
function agentStackLimit(): number | undefined {
  agentStack ??= { value: stackLimit() };
  return agentStack.value;
}

/** Bytes of strings and pointers execve accepts for a process started with stack limit `stack`. */
export function execArgLimit(stack = agentStackLimit()): number {
  const quarter = stack === undefined ? 2 * MiB : stack / 4;
  return Math.max(ARG_MAX_FLOOR, Math.min(ARG_MAX_CEILING, Math.floor(quarter)));
}

const POINTER_BYTES = 8;

/**
 * Throws INVALID_ARGUMENT when execve would refuse `file` with `args` and `env`
 * (E2BIG): one string too long, or all of them together.
 */
export function checkExecSize(file: string, args: readonly string[], env: Readonly<Record<string, string>>, limit = execArgLimit()): void {
  const argv = [file, ...args];
  let total = Buffer.byteLength(file) + 1 + SPAWN_SLACK;
  let argBytes = 0;
  argv.forEach((arg, i) => {
    const bytes = Buffer.byteLength(arg) + 1;
    if (bytes > MAX_ARG_STRLEN) {
      throw invalidArgument(`argument ${i} is ${bytes - 1} bytes; execve takes at most ${MAX_ARG_STRLEN - 1} bytes in one argument`);
    }
    argBytes += bytes;
  });
  let envBytes = 0;
  const names = Object.keys(env);
  for (const name of names) {
    const bytes = Buffer.byteLength(name) + 1 + Buffer.byteLength(env[name]!) + 1;
    if (bytes > MAX_ARG_STRLEN) {
      throw invalidArgument(
        `environment variable ${name} is ${bytes - 1} bytes as NAME=value; execve takes at most ${MAX_ARG_STRLEN - 1} bytes in one variable`,
      );
    }
    envBytes += bytes;
  }
  total += argBytes + envBytes + (argv.length + names.length + 2) * POINTER_BYTES;
  if (total > limit) {
    throw invalidArgument(
      `arguments and environment are too large to start a process: ${argBytes} bytes in ${argv.length} arguments and ` +
        `${envBytes} bytes in ${names.length} variables; execve takes about ${limit - SPAWN_SLACK} bytes in all (a quarter of the stack limit)`,
    );
  }
}
