// Splits a byte stream into "\n"-terminated lines (a trailing "\r" is dropped),
// across chunk boundaries, holding at most maxBytes of any one line.
export interface LineInfo {
  /** Length of the whole line as it arrived. */
  bytes: number;
  /** The line was longer than maxBytes: only its first maxBytes (keepHead) or nothing was kept. */
  truncated: boolean;
}

export interface LineSplitterOptions {
  maxBytes: number;
  /** For an oversized line: keep its first maxBytes (true) or drop it whole (false). */
  keepHead: boolean;
  onLine(line: Buffer, info: LineInfo): void;
}

const LF = 0x0a;
const CR = 0x0d;

export class LineSplitter {
  private parts: Buffer[] = [];
  private kept = 0;
  private total = 0;

  constructor(private readonly opts: LineSplitterOptions) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LF, start);
      if (nl === -1) {
        this.append(chunk.subarray(start));
        return;
      }
      this.append(chunk.subarray(start, nl));
      this.emit();
      start = nl + 1;
    }
  }

  /** Emits a last line that has no "\n" (the stream has ended). */
  flush(): void {
    if (this.total > 0) this.emit();
  }

  private append(part: Buffer): void {
    if (part.length === 0) return;
    this.total += part.length;
    if (this.total <= this.opts.maxBytes) {
      this.parts.push(part);
      this.kept += part.length;
      return;
    }
    if (!this.opts.keepHead) {
      this.parts = [];
      this.kept = 0;
      return;
    }
    const room = this.opts.maxBytes - this.kept;
    if (room > 0) {
      this.parts.push(part.subarray(0, room));
      this.kept += room;
    }
  }

  private emit(): void {
    const truncated = this.total > this.opts.maxBytes;
    let line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.kept);
    if (!truncated && line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
    const info: LineInfo = { bytes: this.total, truncated };
    this.parts = [];
    this.kept = 0;
    this.total = 0;
    this.opts.onLine(line, info);
  }
}
