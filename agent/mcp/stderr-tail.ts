// The last lines an MCP server wrote to stderr, returned with its exit so that a
// dead server explains itself. Bounded: `maxLines` lines of at most `lineBytes`.
import { LineSplitter } from "./lines.js";

export class StderrTail {
  private readonly ring: string[] = [];
  private readonly splitter: LineSplitter;

  constructor(
    private readonly maxLines: number,
    lineBytes: number,
  ) {
    this.splitter = new LineSplitter({
      maxBytes: lineBytes,
      keepHead: true,
      onLine: (line, info) => {
        const text = line.toString("utf8");
        this.add(info.truncated ? `${text} … [line cut, ${info.bytes} bytes]` : text);
      },
    });
  }

  push(chunk: Buffer): void {
    this.splitter.push(chunk);
  }

  /** Adds a line of the agent's own (e.g. why the server could not be reached). */
  add(line: string): void {
    this.ring.push(line);
    if (this.ring.length > this.maxLines) this.ring.shift();
  }

  /** The kept lines, oldest first, including a last line without "\n". */
  lines(): string[] {
    this.splitter.flush();
    return [...this.ring];
  }
}
