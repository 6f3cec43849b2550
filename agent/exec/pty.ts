// Exec on a pseudo-terminal (node-pty). node-pty is a native addon that lives in
// the runtime bundle, not in agent.js; it is loaded on the first PTY exec, so an
// agent whose pty cannot load still serves everything else.
//
// node-pty execs in a forked child and, when that fails, only prints the reason
// on the terminal and exits 1; so cwd and program are checked here first, to
// answer NOT_FOUND / PERMISSION_DENIED like pipe mode does.
//
// The agent holds the terminal's slave side open until node-pty has reaped the
// child (see holdSlaveUntilReaped): node-pty closes the master as soon as a read
// fails with EIO, which happens the moment the child closes its last descriptor
// of the terminal, and closing the master hangs the terminal up, which sends
// SIGHUP to the session. A command on its way out (cat after end-of-file has
// closed 0, 1 and 2 but not yet called exit) was then killed by that SIGHUP and
// reported 129 instead of its exit code, about once in six runs under load.
import { closeSync, openSync, constants as fsConstants, readFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type * as NodePty from "node-pty";
import { failedPrecondition, RpcError, Status } from "../errors.js";
import { loadNodePty } from "../runtime-paths.js";
import { EXEC_STDIN_BUFFER_BYTES } from "../limits.js";
import { killGroup, untilOwnSession } from "./children.js";
import type { ExecSpec } from "./command.js";
import { searchPath } from "./env.js";
import type { ExecSink, RunningProcess } from "./running.js";
import { PtyStdin, type PtyDescriptor } from "./pty-stdin.js";
import { signalName } from "./signals.js";
import { checkCwd, programNotExecutable, programNotFound, type SpawnTarget } from "./spawn-error.js";

export const PTY_TERM = "xterm-256color";
/** What close_stdin types on a terminal: ^D, end-of-file at the start of a line. */
const EOF = "\x04";

function loadPty(): typeof NodePty {
  try {
    return loadNodePty();
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw failedPrecondition(`PTY support is unavailable in this agent (node-pty did not load: ${why}); run without pty`);
  }
}

/** Fails like execvp would, before forking: NOT_FOUND or PERMISSION_DENIED. */
async function checkProgram(target: SpawnTarget, env: Record<string, string>): Promise<void> {
  const candidates = target.file.includes("/")
    ? [path.resolve(target.cwd, target.file)]
    : searchPath(env, target.cwd).map((dir) => path.join(dir, target.file));
  let denied = false;
  for (const candidate of candidates) {
    try {
      const st = await fs.stat(candidate);
      if (!st.isFile()) {
        denied ||= st.isDirectory();
        continue;
      }
      await fs.access(candidate, fs.constants.X_OK);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EACCES") denied = true;
    }
  }
  throw denied ? programNotExecutable(target) : programNotFound(target);
}

/** The agent's supplementary groups as the kernel holds them (process.getgroups() adds the egid). */
function supplementaryGroups(): number[] {
  try {
    const line = readFileSync("/proc/self/status", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Groups:"));
    if (line !== undefined) return line.slice("Groups:".length).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    // No /proc: fall back to what Node reports.
  }
  return process.getgroups?.() ?? [];
}

/**
 * Runs fn (which forks) with the agent's supplementary groups cleared, so the
 * forked child has none. node-pty's child calls setgid and setuid but not
 * setgroups: without this, a process run as another user would keep the
 * agent's groups. The fork is synchronous, so nothing else of the agent runs
 * with the cleared list except the threadpool, which as root does not rely on
 * groups for access.
 */
function withoutSupplementaryGroups<T>(fn: () => T): T {
  const saved = supplementaryGroups();
  try {
    process.setgroups?.([]);
  } catch (err) {
    throw new RpcError(Status.PERMISSION_DENIED, `cannot drop the supplementary groups for another user: ${(err as Error).message}`, { cause: err });
  }
  try {
    return fn();
  } finally {
    process.setgroups?.(saved);
  }
}

interface PtyErrorEvents {
  on(event: "error", listener: (err: Error) => void): void;
}

/** What of node-pty's UnixTerminal (1.x) the agent relies on besides its typings. */
interface PtyInternals {
  /** The master's descriptor, owned by the read stream below. */
  fd?: unknown;
  /** The terminal's read stream on fd; destroying it closes fd. */
  _socket?: { destroyed?: unknown };
  /** The slave's path (ptsname). */
  _pty?: unknown;
  /** Set to true once the child has been reaped while the read stream was still open. */
  _boundClose?: unknown;
}

/** The master descriptor and whether it is still open, or undefined when node-pty is laid out differently. */
function masterOf(term: NodePty.IPty): PtyDescriptor | undefined {
  const internals = term as unknown as PtyInternals;
  const socket = internals._socket;
  if (typeof internals.fd !== "number" || typeof socket?.destroyed !== "boolean") return undefined;
  return { fd: internals.fd, open: () => socket.destroyed === false };
}

/**
 * Opens the terminal's slave side in the agent and keeps it open until node-pty has
 * reaped the child, so the master never reads EIO (and node-pty never closes it)
 * while the child lives. The child's reaping is seen where node-pty records it: it
 * sets _boundClose when the child exited while the terminal was still open, then
 * waits for the read stream to close; closing the slave here lets the stream read
 * what is left, hit EIO and close, and node-pty reports the exit. Returns the
 * function that closes the slave (at most once), or undefined when node-pty is laid
 * out differently or the slave cannot be opened (then the terminal behaves as
 * node-pty alone makes it).
 */
function holdSlaveUntilReaped(term: NodePty.IPty): (() => void) | undefined {
  const internals = term as unknown as PtyInternals;
  const slavePath = internals._pty;
  if (typeof slavePath !== "string" || !slavePath.startsWith("/dev/pts/") || internals._boundClose !== false) return undefined;
  let fd: number;
  try {
    // libuv adds O_CLOEXEC: processes the agent starts later never inherit it.
    fd = openSync(slavePath, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
  } catch {
    return undefined;
  }
  let open = true;
  const release = () => {
    if (!open) return;
    open = false;
    closeSync(fd);
  };
  let boundClose = false;
  Object.defineProperty(internals, "_boundClose", {
    configurable: true,
    enumerable: true,
    get: () => boundClose,
    set: (value: boolean) => {
      boundClose = value;
      if (value) release();
    },
  });
  return release;
}

class PtyProcess implements RunningProcess {
  readonly pid: number;
  readonly stdinReopens = true;
  private readonly stdin: PtyStdin;

  constructor(
    private readonly term: NodePty.IPty,
    private readonly master: PtyDescriptor,
    private readonly releaseSlave: () => void,
    sink: ExecSink,
  ) {
    this.pid = term.pid;
    this.stdin = new PtyStdin(master, EXEC_STDIN_BUFFER_BYTES);
    // With `encoding: null` node-pty delivers Buffers, although its typings say string.
    term.onData((data) => sink.stdout(data as unknown as Buffer));
    // node-pty fires onExit once the terminal's output has been read to its end.
    term.onExit(({ exitCode, signal }) => {
      this.releaseSlave();
      this.stdin.close();
      if (signal) sink.exited({ code: 128 + signal, signal: signalName(signal) ?? "" });
      else sink.exited({ code: exitCode, signal: "" });
    });
    // Without a listener of ours, node-pty rethrows read errors other than EIO.
    (term as unknown as PtyErrorEvents).on("error", () => {});
  }

  pause(): void {
    this.term.pause();
  }

  resume(): void {
    this.term.resume();
  }

  writeStdin(data: Uint8Array): boolean {
    return this.stdin.write(data);
  }

  stdinPending(): number {
    return this.stdin.pending;
  }

  onStdinDrain(listener: () => void): void {
    this.stdin.onDrain(listener);
  }

  closeStdin(): void {
    this.stdin.write(Buffer.from(EOF));
  }

  resize(cols: number, rows: number): void {
    // node-pty's resize is an ioctl on the descriptor number: never after the read stream closed it.
    if (!this.master.open()) return;
    try {
      this.term.resize(cols || this.term.cols, rows || this.term.rows);
    } catch {
      // The terminal is already closed: the exit follows.
    }
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    // The pty's child is a session leader (setsid in forkpty): its pid is the group id.
    killGroup(this.pid, signal);
  }

  abandon(): void {
    this.stdin.close();
    this.releaseSlave();
    // Read (and drop) what is left so that the terminal closes and the exit fires.
    this.term.resume();
  }
}

export async function spawnPty(spec: ExecSpec, sink: ExecSink): Promise<RunningProcess> {
  if (!spec.pty) throw new Error("spawnPty without a pty size");
  const pty = loadPty();
  const target: SpawnTarget = { file: spec.file, cwd: spec.cwd, viaShell: spec.viaShell, pathValue: spec.env.PATH };
  const cwdProblem = await checkCwd(spec.cwd);
  if (cwdProblem) throw cwdProblem;
  await checkProgram(target, spec.env);
  let term: NodePty.IPty;
  try {
    const open = () =>
      pty.spawn(spec.file, spec.args, {
        name: PTY_TERM,
        cols: spec.pty!.cols,
        rows: spec.pty!.rows,
        cwd: spec.cwd,
        env: spec.env,
        encoding: null,
        uid: spec.ids?.uid,
        gid: spec.ids?.gid,
      });
    term = spec.ids ? withoutSupplementaryGroups(open) : open();
  } catch (err) {
    if (err instanceof RpcError) throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new RpcError(Status.FAILED_PRECONDITION, `cannot open a pseudo-terminal: ${why}`, { cause: err });
  }
  const master = masterOf(term);
  if (!master) {
    killGroup(term.pid, "SIGKILL");
    throw new RpcError(Status.FAILED_PRECONDITION, "PTY support is unavailable in this agent (node-pty does not expose its terminal descriptor); run without pty");
  }
  const releaseSlave = holdSlaveUntilReaped(term) ?? (() => {});
  // Listening from here on: the terminal's output and exit are not lost meanwhile.
  const proc = new PtyProcess(term, master, releaseSlave, sink);
  await untilOwnSession(term.pid);
  return proc;
}
