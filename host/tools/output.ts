// A command's output as it streams in, kept bounded however much arrives: the first
// and the last half of the output limit, plus how many bytes and lines went by. What
// the model sees is the same head-and-tail form truncate.ts gives any output.
import { OUTPUT_MAX_BYTES, OUTPUT_MAX_LINES, omissionMarker, splitLines, truncateOutput, utf8Prefix, utf8Suffix, type TruncatedOutput } from "./truncate.js";

const HALF = OUTPUT_MAX_BYTES / 2;

function countNewlines(b: Uint8Array): number {
  let n = 0;
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
  return n;
}

export class OutputCollector {
  private head = Buffer.alloc(0);
  private tail: Buffer[] = [];
  private tailBytes = 0;
  /** Every byte that arrived, and its line breaks. */
  total = 0;
  private newlines = 0;
  private lastByte = -1;

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.total += chunk.byteLength;
    this.newlines += countNewlines(chunk);
    this.lastByte = chunk[chunk.byteLength - 1]!;
    let data = Buffer.from(chunk);
    if (this.head.byteLength < HALF) {
      const take = Math.min(HALF - this.head.byteLength, data.byteLength);
      this.head = Buffer.concat([this.head, data.subarray(0, take)]);
      data = data.subarray(take);
    }
    if (data.byteLength === 0) return;
    this.tail.push(data);
    this.tailBytes += data.byteLength;
    while (this.tail.length > 1 && this.tailBytes - this.tail[0]!.byteLength >= HALF) this.tailBytes -= this.tail.shift()!.byteLength;
  }

  /** Lines of the whole output (a last line without a line break counts). */
  get lines(): number {
    return this.newlines + (this.total > 0 && this.lastByte !== 10 ? 1 : 0);
  }

  /** The output as text: whole when it fits the limits, else its head and tail with a marker. */
  text(): TruncatedOutput {
    const tail = Buffer.concat(this.tail);
    if (this.head.byteLength + tail.byteLength === this.total) return truncateOutput(Buffer.concat([this.head, tail]).toString("utf8"));
    // Bytes went by unkept: take up to half the lines and bytes from each end.
    const headLines = splitLines(utf8Prefix(this.head.toString("utf8"), HALF)).slice(0, Math.ceil(OUTPUT_MAX_LINES / 2));
    const tailLines = splitLines(utf8Suffix(tail.toString("utf8"), HALF)).slice(-Math.floor(OUTPUT_MAX_LINES / 2));
    // The first tail line is usually a fragment of a longer one: drop it unless it is all there is.
    if (tailLines.length > 1) tailLines.shift();
    const headText = headLines.join("");
    const tailText = tailLines.join("");
    const shownBytes = Buffer.byteLength(headText) + Buffer.byteLength(tailText);
    const omittedBytes = this.total - shownBytes;
    const omittedLines = Math.max(0, this.lines - headLines.length - tailLines.length);
    const text = `${headText}${headText.endsWith("\n") || headText === "" ? "" : "\n"}${omissionMarker(omittedLines, omittedBytes)}${tailText}`;
    return { text, truncated: true, totalLines: this.lines, totalBytes: this.total, omittedLines, omittedBytes };
  }
}
