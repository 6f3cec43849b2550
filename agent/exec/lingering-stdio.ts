// A process can exit while something it started in the background
// (`server &`) still holds its stdout or stderr; waiting for those pipes to
// close would then hang the call until that background process ends. After the
// exit, pipes that stay open and quiet for graceMs are destroyed instead, so the
// exit is reported (the background process gets EPIPE if it writes later).
// Output still flowing, or held back by a slow client, keeps them open.
import type { Readable } from "node:stream";
import type { Pausable } from "./stream.js";

export class LingeringStdio implements Pausable {
  private timer: NodeJS.Timeout | undefined;
  private exited = false;
  private paused = false;

  constructor(
    private readonly streams: readonly Readable[],
    private readonly graceMs: number,
  ) {}

  /** The process has exited; its pipes may still hold output. */
  processExited(): void {
    this.exited = true;
    this.arm();
  }

  /** Output arrived: the pipes are not idle. */
  activity(): void {
    if (this.timer !== undefined) this.arm();
  }

  pause(): void {
    this.paused = true;
    this.disarm();
  }

  resume(): void {
    this.paused = false;
    if (this.exited) this.arm();
  }

  dispose(): void {
    this.exited = false;
    this.disarm();
  }

  private arm(): void {
    this.disarm();
    if (this.paused) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      for (const s of this.streams) s.destroy();
    }, this.graceMs);
  }

  private disarm(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
