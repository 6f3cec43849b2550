// Output an LLM reads is bounded: past OUTPUT_MAX_BYTES or OUTPUT_MAX_LINES, the head
// and the tail are kept (errors tend to be at the end, context at the start) with a
// marker between them that says how much was left out.

export const OUTPUT_MAX_BYTES = 64 * 1024;
export const OUTPUT_MAX_LINES = 2000;

export interface OutputLimits {
  maxBytes: number;
  maxLines: number;
}

export interface TruncatedOutput {
  text: string;
  truncated: boolean;
  /** Lines and bytes of the whole output. */
  totalLines: number;
  totalBytes: number;
  omittedLines: number;
  omittedBytes: number;
}

/** The line that stands for what was left out between head and tail. */
export function omissionMarker(lines: number, bytes: number, limits: OutputLimits = { maxBytes: OUTPUT_MAX_BYTES, maxLines: OUTPUT_MAX_LINES }): string {
  return `[... ${lines} lines, ${bytes} bytes omitted: output over ${limits.maxLines} lines or ${limits.maxBytes} bytes keeps its head and tail ...]\n`;
}

/** Lines with their "\n"; a last line without one counts; "" has none. */
export function splitLines(text: string): string[] {
  const lines: string[] = [];
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf("\n", pos);
    const end = nl === -1 ? text.length : nl + 1;
    lines.push(text.slice(pos, end));
    pos = end;
  }
  return lines;
}

/** The longest prefix of `s` that is at most `maxBytes` bytes of UTF-8, cut between characters. */
export function utf8Prefix(s: string, maxBytes: number): string {
  const buf = Buffer.from(s, "utf8");
  if (buf.length <= maxBytes) return s;
  let end = Math.max(0, maxBytes);
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString("utf8");
}

/** The longest suffix of `s` that is at most `maxBytes` bytes of UTF-8, cut between characters. */
export function utf8Suffix(s: string, maxBytes: number): string {
  const buf = Buffer.from(s, "utf8");
  if (buf.length <= maxBytes) return s;
  let start = buf.length - Math.max(0, maxBytes);
  while (start < buf.length && (buf[start]! & 0xc0) === 0x80) start++;
  return buf.subarray(start).toString("utf8");
}

/**
 * `text` unchanged when it fits both limits; otherwise its first lines and its last
 * lines, each half of the budget, with a marker line between them. A single line
 * larger than half the bytes is cut, so one huge line still shows its start and end.
 */
export function truncateOutput(text: string, limits: OutputLimits = { maxBytes: OUTPUT_MAX_BYTES, maxLines: OUTPUT_MAX_LINES }): TruncatedOutput {
  const totalBytes = Buffer.byteLength(text, "utf8");
  const lines = splitLines(text);
  const whole = { text, truncated: false, totalLines: lines.length, totalBytes, omittedLines: 0, omittedBytes: 0 };
  if (totalBytes <= limits.maxBytes && lines.length <= limits.maxLines) return whole;

  const halfBytes = Math.floor(limits.maxBytes / 2);
  const headMaxLines = Math.ceil(limits.maxLines / 2);
  const tailMaxLines = Math.floor(limits.maxLines / 2);

  const head: string[] = [];
  let headBytes = 0;
  let headEnd = 0; // lines[0, headEnd) are kept whole
  while (headEnd < lines.length && head.length < headMaxLines) {
    const b = Buffer.byteLength(lines[headEnd]!, "utf8");
    if (headBytes + b > halfBytes) break;
    head.push(lines[headEnd]!);
    headBytes += b;
    headEnd++;
  }
  let headPartial = "";
  if (head.length === 0 && lines.length > 0) {
    headPartial = utf8Prefix(lines[0]!, halfBytes);
    headBytes = Buffer.byteLength(headPartial, "utf8");
  }

  const tail: string[] = [];
  let tailBytes = 0;
  let tailStart = lines.length; // lines[tailStart, length) are kept whole
  const tailFloor = headPartial !== "" ? 1 : headEnd;
  while (tailStart > tailFloor && tail.length < tailMaxLines) {
    const b = Buffer.byteLength(lines[tailStart - 1]!, "utf8");
    if (tailBytes + b > halfBytes) break;
    tail.unshift(lines[tailStart - 1]!);
    tailBytes += b;
    tailStart--;
  }
  let tailPartial = "";
  if (tail.length === 0) {
    const last = tailStart - 1;
    if (last >= tailFloor) tailPartial = utf8Suffix(lines[last]!, halfBytes);
    // One line cut at both ends: the tail's part must not overlap the head's.
    else if (headPartial !== "" && last === 0) tailPartial = utf8Suffix(lines[0]!, Math.min(halfBytes, Buffer.byteLength(lines[0]!, "utf8") - headBytes));
    tailBytes = Buffer.byteLength(tailPartial, "utf8");
  }

  const omittedBytes = totalBytes - headBytes - tailBytes;
  // Lines not shown at all (a line cut at one end is partly shown).
  const firstHidden = headPartial !== "" ? 1 : headEnd;
  const hiddenEnd = tailPartial !== "" ? tailStart - 1 : tailStart;
  const omittedLines = Math.max(0, hiddenEnd - firstHidden);
  let out = head.join("") + headPartial;
  if (!out.endsWith("\n") && out !== "") out += "\n";
  out += omissionMarker(omittedLines, omittedBytes, limits);
  out += tailPartial + tail.join("");
  return { text: out, truncated: true, totalLines: lines.length, totalBytes, omittedLines, omittedBytes };
}
