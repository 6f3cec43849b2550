// What the Exec session needs from a started process, whether it runs on pipes
// (process.ts) or on a pseudo-terminal (pty.ts).
import type { ExitStatus } from "./signals.js";
import type { Pausable } from "./stream.js";

/** Where a running process delivers its output and its end. */
export interface ExecSink {
  stdout(data: Uint8Array): void;
  stderr(data: Uint8Array): void;
  /** Called once, after every byte of output has been delivered. */
  exited(status: ExitStatus): void;
}

export interface RunningProcess extends Pausable {
  /** Process id, and the id of the process group it leads. */
  readonly pid: number;
  /** After closeStdin, stdin still accepts bytes (a pty: EOF is just ^D). */
  readonly stdinReopens: boolean;
  /**
   * Queues bytes for stdin; false = EXEC_STDIN_BUFFER_BYTES or more are waiting
   * for the process: stop reading stdin until onStdinDrain.
   */
  writeStdin(data: Uint8Array): boolean;
  /** Stdin bytes received and not yet taken by the process. */
  stdinPending(): number;
  /** Calls listener once stdin is below its limit again, or will never be written (the process is gone). */
  onStdinDrain(listener: () => void): void;
  closeStdin(): void;
  /** 0 keeps the current dimension; ignored without a pty. */
  resize(cols: number, rows: number): void;
  /** Signals the whole process group. */
  kill(signal?: NodeJS.Signals): void;
  /** The client is gone: stop holding output back so the exit arrives without it. */
  abandon(): void;
}
