// Exec on pipes: stdin, stdout and stderr are separate streams.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { EXEC_STDIN_BUFFER_BYTES, EXEC_STDIO_GRACE_MS } from "../limits.js";
import { killGroup } from "./children.js";
import type { ExecSpec } from "./command.js";
import { LingeringStdio } from "./lingering-stdio.js";
import type { ExecSink, RunningProcess } from "./running.js";
import { exitStatus } from "./signals.js";
import { spawnFailure, type SpawnTarget } from "./spawn-error.js";

// Errors on a pipe (EPIPE on stdin after the process exited or closed it) are
// expected; what matters is reported by the exit.
const ignore = (): void => {};

/**
 * Spawns a program as the leader of its own process group (detached: setsid),
 * so that signals, timeouts and cancellation reach everything it starts.
 * Rejects with a status (NOT_FOUND, PERMISSION_DENIED, ...) when it cannot start.
 */
export function spawnGroupLeader(
  target: SpawnTarget,
  args: readonly string[],
  env: Record<string, string>,
  ids: { uid: number; gid: number } | undefined,
): Promise<ChildProcessWithoutNullStreams> {
  let child: ChildProcessWithoutNullStreams;
  try {
    // With uid/gid, libuv drops the supplementary groups (setgroups(0)) before setgid and setuid.
    child = spawn(target.file, args, { cwd: target.cwd, env, detached: true, stdio: "pipe", uid: ids?.uid, gid: ids?.gid });
  } catch (err) {
    return spawnFailure(err, target).then((e) => Promise.reject(e));
  }
  if (child.pid !== undefined) return Promise.resolve(child);
  // The program did not start: Node reports why in an 'error' event on the next tick.
  return new Promise((_, reject) => {
    child.once("error", (err) => {
      spawnFailure(err, target).then(reject, reject);
    });
  });
}

class PipeProcess implements RunningProcess {
  readonly pid: number;
  readonly stdinReopens = false;
  private readonly lingering: LingeringStdio;

  constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    sink: ExecSink,
  ) {
    this.pid = child.pid!;
    this.lingering = new LingeringStdio([child.stdout, child.stderr], EXEC_STDIO_GRACE_MS);
    child.stdout.on("data", (data: Buffer) => {
      this.lingering.activity();
      sink.stdout(data);
    });
    child.stderr.on("data", (data: Buffer) => {
      this.lingering.activity();
      sink.stderr(data);
    });
    child.stdin.on("error", ignore);
    child.stdout.on("error", ignore);
    child.stderr.on("error", ignore);
    child.on("error", ignore);
    child.on("exit", () => this.lingering.processExited());
    // 'close' comes after the exit AND the end of stdout and stderr: all output is delivered.
    child.on("close", (code, signal) => {
      this.lingering.dispose();
      child.stdin.destroy();
      sink.exited(exitStatus(code, signal));
    });
  }

  pause(): void {
    this.child.stdout.pause();
    this.child.stderr.pause();
    this.lingering.pause();
  }

  resume(): void {
    this.child.stdout.resume();
    this.child.stderr.resume();
    this.lingering.resume();
  }

  writeStdin(data: Uint8Array): boolean {
    const stdin = this.child.stdin;
    if (stdin.writableEnded || stdin.destroyed) return true;
    // The Writable keeps the message's bytes (no copy) until the pipe takes them.
    stdin.write(data);
    return stdin.writableLength < EXEC_STDIN_BUFFER_BYTES;
  }

  stdinPending(): number {
    const stdin = this.child.stdin;
    return stdin.destroyed ? 0 : stdin.writableLength;
  }

  onStdinDrain(listener: () => void): void {
    const stdin = this.child.stdin;
    if (stdin.destroyed || stdin.writableLength < EXEC_STDIN_BUFFER_BYTES) {
      queueMicrotask(listener);
      return;
    }
    // 'drain' when the pipe took everything; 'close' when it never will.
    const done = () => {
      stdin.off("drain", done);
      stdin.off("close", done);
      listener();
    };
    stdin.on("drain", done);
    stdin.on("close", done);
  }

  closeStdin(): void {
    if (!this.child.stdin.writableEnded) this.child.stdin.end();
  }

  resize(): void {
    // No terminal, nothing to resize.
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    killGroup(this.pid, signal);
  }

  abandon(): void {
    // Drops the stdin not yet written: the memory goes now, not when the process is reaped.
    this.child.stdin.destroy();
    this.lingering.dispose();
    this.child.stdout.destroy();
    this.child.stderr.destroy();
  }
}

export async function spawnProcess(spec: ExecSpec, sink: ExecSink): Promise<RunningProcess> {
  const target: SpawnTarget = { file: spec.file, cwd: spec.cwd, viaShell: spec.viaShell, pathValue: spec.env.PATH };
  const child = await spawnGroupLeader(target, spec.args, spec.env, spec.ids);
  return new PipeProcess(child, sink);
}
