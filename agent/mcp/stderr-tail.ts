// The last lines an MCP server wrote to stderr, returned with its exit so that a
// dead server explains itself. Bounded: `maxLines` lines of at most `lineBytes`.
import { LineSplitter } from "./lines.js";

/** `text` cut to at most maxBytes of UTF-8, at a character boundary. */
export function cutUtf8(text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text;
  const bytes = Buffer.from(text, "utf8");
  let end = maxBytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString("utf8");
}

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
        // Cut again as text: invalid UTF-8 bytes grow to 3 bytes each when decoded.
        const decoded = line.toString("utf8");
        const text = cutUtf8(decoded, lineBytes);
        this.add(info.truncated || text !== decoded ? `${text} … [line cut, ${info.bytes} bytes]` : text);
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
