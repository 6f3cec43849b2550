// Stdin of a pty, written by the agent itself instead of node-pty.
//
// node-pty queues every write without bound (1 GiB of stdin to a program that
// does not read was all held in memory), retries a full terminal in a busy
// setImmediate loop, and keeps writing to the descriptor number after the
// terminal's read stream has closed it (the number may by then belong to
// another file). Here the queue is counted, so Exec can stop reading its
// request stream when it is full; writes are synchronous on the non-blocking
// master, each preceded by a check that the descriptor is still open (the read
// stream closes it synchronously on the same thread, so the check cannot race);
// a full terminal is retried on a backing-off timer.
import fs from "node:fs";
import { PTY_STDIN_RETRY_MAX_MS, PTY_STDIN_RETRY_MIN_MS } from "../limits.js";

/** Bytes written in one turn of the event loop at most. */
const TURN_BYTES = 256 * 1024;

export interface PtyDescriptor {
  /** The master's descriptor number. */
  readonly fd: number;
  /** Whether the descriptor is still open (false once the terminal's read stream is destroyed). */
  open(): boolean;
}

export class PtyStdin {
  private readonly queue: Buffer[] = [];
  /** Bytes of queue[0] already written. */
  private offset = 0;
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = PTY_STDIN_RETRY_MIN_MS;
  private closed = false;
  private drainListeners: Array<() => void> = [];

  constructor(
    private readonly master: PtyDescriptor,
    /** Queued bytes at which the queue counts as full. */
    private readonly limit: number,
  ) {}

  /** Bytes received and not yet written to the terminal. */
  get pending(): number {
    return this.queued;
  }

  /** Queues bytes; false when the queue is now full (wait for onDrain). */
  write(data: Uint8Array): boolean {
    if (this.closed) return true;
    if (data.byteLength === 0) return this.queued < this.limit;
    // The request message's bytes are kept as they are (no copy).
    this.queue.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    this.queued += data.byteLength;
    if (this.timer === undefined) this.flush();
    return this.queued < this.limit;
  }

  /** Calls listener once the queue is below its limit again (or dropped). */
  onDrain(listener: () => void): void {
    if (this.closed || this.queued < this.limit) {
      queueMicrotask(listener);
      return;
    }
    this.drainListeners.push(listener);
  }

  /** Drops what is queued and writes nothing more (the terminal closed, or the client left). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
    this.offset = 0;
    this.queued = 0;
    this.notifyDrain();
  }

  private flush(): void {
    this.timer = undefined;
    let turn = 0;
    while (this.queue.length > 0) {
      if (turn >= TURN_BYTES) {
        // Let the event loop run (other calls, the terminal's output) before writing more.
        this.timer = setTimeout(() => this.flush(), 0);
        return;
      }
      if (this.closed) return;
      if (!this.master.open()) {
        this.close();
        return;
      }
      const head = this.queue[0]!;
      let written: number;
      try {
        written = fs.writeSync(this.master.fd, head, this.offset, head.byteLength - this.offset);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EINTR") {
          this.timer = setTimeout(() => this.flush(), this.retryMs);
          this.retryMs = Math.min(this.retryMs * 2, PTY_STDIN_RETRY_MAX_MS);
          return;
        }
        // EIO: the terminal's other side is gone; the exit follows.
        this.close();
        return;
      }
      this.retryMs = PTY_STDIN_RETRY_MIN_MS;
      turn += written;
      this.offset += written;
      this.queued -= written;
      if (this.offset >= head.byteLength) {
        this.queue.shift();
        this.offset = 0;
      }
      if (this.queued < this.limit) this.notifyDrain();
    }
  }

  private notifyDrain(): void {
    const listeners = this.drainListeners;
    this.drainListeners = [];
    for (const l of listeners) l();
  }
}
