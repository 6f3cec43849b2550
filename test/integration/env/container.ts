// A minimal container runner on top of `ctr`, for tests that need a workspace-shaped container
// before the TypeScript containerd client exists: the runtime bundle mounted read-only at
// /opt/memoh, a host socket dir mounted at /run/memoh, and the agent under tini as PID 1.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { listTasks, type ContainerdEnv, type CtrResult } from "./containerd.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

export const DEFAULT_RUNTIME_DIR = path.join(repoRoot, "runtime-bundle", "out");
export const RUNTIME_MOUNT = "/opt/memoh";
export const SOCKET_MOUNT = "/run/memoh";
export const DEFAULT_AGENT_ARGS = ["/opt/memoh/bin/tini", "-g", "--", "/opt/memoh/bin/node", "/opt/memoh/agent.js"];

/** Throws a clear error unless the runtime bundle has been built. */
export function requireRuntimeBundle(runtimeDir = DEFAULT_RUNTIME_DIR): void {
  for (const f of ["bin/node", "bin/tini", "agent.js", "lib/ld-linux-x86-64.so.2"]) {
    if (!fs.existsSync(path.join(runtimeDir, f))) {
      throw new Error(`runtime bundle incomplete (${path.join(runtimeDir, f)} missing): run \`npx tsx scripts/build-runtime.ts\``);
    }
  }
}

export interface BindMount {
  src: string;
  dst: string;
  readonly?: boolean;
}

export interface RunContainerOptions {
  /** Container id, also the snapshot key. */
  id: string;
  image: string;
  /** Mounted read-only at /opt/memoh (default: runtime-bundle/out); null mounts nothing. */
  runtimeDir?: string | null;
  /** Mounted read-write at /run/memoh (default: a fresh <env.dir>/sockets/<id>). */
  socketDir?: string;
  extraMounts?: BindMount[];
  /** Added to the image's environment. BRIDGE_SOCKET_PATH defaults to /run/memoh/bridge.sock. */
  env?: Record<string, string>;
  /** Default: DEFAULT_AGENT_ARGS. */
  args?: string[];
  cwd?: string;
  /** Share the host's network namespace (default: a private one with only loopback). */
  netHost?: boolean;
}

export type ExecResult = CtrResult;

export interface ExecOptions {
  cwd?: string;
  user?: string;
  /** Written to the process's stdin, then closed (stdin is always closed). */
  input?: string | Buffer;
  /** Default 30 s. */
  timeoutMs?: number;
}

export interface StopOptions {
  /** How long SIGTERM gets before SIGKILL (default 5 s). */
  graceMs?: number;
}

export interface RunningContainer {
  readonly id: string;
  readonly image: string;
  /** Host dir mounted at /run/memoh. */
  readonly socketDir: string;
  /** Host path of /run/memoh/bridge.sock. */
  readonly socketPath: string;
  /** The container's stdout+stderr (ctr --log-uri file://). */
  readonly logPath: string;
  /** Runs argv in the container (`ctr task exec`); resolves with its exit code and output. */
  exec(argv: string[], options?: ExecOptions): Promise<ExecResult>;
  /** The container's output so far. */
  logs(): string;
  /** SIGTERM, wait, SIGKILL after the grace period; delete task, container and snapshot. */
  stop(options?: StopOptions): Promise<void>;
}

function mountFlag(type: string, src: string, dst: string, options: string): string[] {
  // ctr splits --mount on "," and options on ":"; such paths cannot be expressed.
  for (const p of [src, dst]) if (/[,:]/.test(p)) throw new Error(`ctr --mount cannot express path ${p}`);
  return ["--mount", `type=${type},src=${src},dst=${dst},options=${options}`];
}

export async function runContainer(env: ContainerdEnv, options: RunContainerOptions): Promise<RunningContainer> {
  const { id, image } = options;
  const socketDir = options.socketDir ?? path.join(env.dir, "sockets", id);
  const logPath = path.join(env.dir, "logs", `${id}.log`);
  fs.mkdirSync(socketDir, { recursive: true });
  fs.mkdirSync(path.dirname(logPath), { recursive: true });

  const runtimeDir = options.runtimeDir === undefined ? DEFAULT_RUNTIME_DIR : options.runtimeDir;
  const args = ["run", "--detach", "--runc-root", env.runcRoot, "--fifo-dir", env.fifoDir, "--log-uri", `file://${logPath}`];
  if (runtimeDir !== null) args.push(...mountFlag("bind", runtimeDir, RUNTIME_MOUNT, "rbind:ro"));
  args.push(...mountFlag("bind", socketDir, SOCKET_MOUNT, "rbind:rw"));
  for (const m of options.extraMounts ?? []) args.push(...mountFlag("bind", m.src, m.dst, m.readonly ? "rbind:ro" : "rbind:rw"));
  const containerEnv = { BRIDGE_SOCKET_PATH: `${SOCKET_MOUNT}/bridge.sock`, ...options.env };
  for (const [k, v] of Object.entries(containerEnv)) args.push("--env", `${k}=${v}`);
  if (options.cwd !== undefined) args.push("--cwd", options.cwd);
  if (options.netHost) args.push("--net-host");
  args.push(image, id, ...(options.args ?? DEFAULT_AGENT_ARGS));

  const readLogs = () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, "utf8") : "");
  const run = await env.ctr(args, { check: false });
  if (run.code !== 0) {
    await removeContainer(env, id, 0).catch(() => {});
    throw new Error(`ctr run ${id} failed (${run.code}): ${run.stderr.trim()}\n${readLogs()}`);
  }

  let execCounter = 0;
  return {
    id,
    image,
    socketDir,
    socketPath: path.join(socketDir, "bridge.sock"),
    logPath,
    logs: readLogs,
    exec: (argv, execOptions = {}) => {
      const execId = `exec-${++execCounter}-${randomBytes(3).toString("hex")}`;
      const execArgs = ["tasks", "exec", "--exec-id", execId, "--fifo-dir", env.fifoDir];
      if (execOptions.cwd !== undefined) execArgs.push("--cwd", execOptions.cwd);
      if (execOptions.user !== undefined) execArgs.push("--user", execOptions.user);
      execArgs.push(id, ...argv);
      return env.ctr(execArgs, { check: false, input: execOptions.input, timeoutMs: execOptions.timeoutMs ?? 30_000 });
    },
    stop: (stopOptions = {}) => removeContainer(env, id, stopOptions.graceMs ?? 5_000),
  };
}

async function taskStatus(env: ContainerdEnv, id: string): Promise<string | undefined> {
  return (await listTasks(env)).find((t) => t.id === id)?.status;
}

async function waitStopped(env: ContainerdEnv, id: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await taskStatus(env, id);
    if (status === undefined || status === "STOPPED") return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

async function removeContainer(env: ContainerdEnv, id: string, graceMs: number): Promise<void> {
  const status = await taskStatus(env, id);
  if (status !== undefined) {
    if (status !== "STOPPED") {
      await env.ctr(["tasks", "kill", "--signal", "SIGTERM", id], { check: false });
      if (!(await waitStopped(env, id, graceMs))) {
        await env.ctr(["tasks", "kill", "--all", "--signal", "SIGKILL", id], { check: false });
        if (!(await waitStopped(env, id, 5_000))) throw new Error(`task ${id} survived SIGKILL`);
      }
    }
    // `ctr tasks delete` exits with the task's exit status, so only stderr signals a failure.
    const del = await env.ctr(["tasks", "delete", id], { check: false });
    if (del.code !== 0 && del.stderr.trim() !== "") throw new Error(`ctr tasks delete ${id}: ${del.stderr.trim()}`);
  }
  // Deleting a container removes its snapshot too; the explicit rm covers a failed `ctr run`.
  const rm = await env.ctr(["containers", "delete", id], { check: false });
  if (rm.code !== 0 && !/not found/.test(rm.stderr)) throw new Error(`ctr containers delete ${id}: ${rm.stderr.trim()}`);
  const snap = await env.ctr(["snapshots", "rm", id], { check: false });
  if (snap.code !== 0 && !/not found|does not exist/.test(snap.stderr)) {
    throw new Error(`ctr snapshots rm ${id}: ${snap.stderr.trim()}`);
  }
}

/** Resolves once something accepts connections on the Unix socket at `socketPath`. */
export async function waitForSocket(socketPath: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "not tried";
  for (;;) {
    const err = await new Promise<Error | undefined>((resolve) => {
      const sock = net.connect(socketPath);
      sock.once("connect", () => {
        sock.destroy();
        resolve(undefined);
      });
      sock.once("error", resolve);
    });
    if (err === undefined) return;
    lastError = err.message;
    if (Date.now() >= deadline) throw new Error(`no listener on ${socketPath} after ${timeoutMs} ms: ${lastError}`);
    await sleep(20);
  }
}
