import { isUtf8 } from "node:buffer";
import type { FileHandle } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { resourceExhausted } from "../errors.js";
import { BINARY_SNIFF_BYTES, READ_FILE_DEFAULT_LINES, READ_FILE_MAX_BYTES } from "../limits.js";
import { requestPath } from "../paths.js";
import { openRegularFile } from "./open.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type ReadFileResponseInit = MessageInitShape<typeof pb.ReadFileResponseSchema>;

const NEWLINE = 0x0a;

/**
 * A text file's lines in a window. One open, one fstat, usually one read: the
 * whole file (≤ READ_FILE_MAX_BYTES) is needed anyway to count its lines.
 * (Measured between two processes: the three thread-pool round trips cost
 * ≈ 0.2 ms over a synchronous read; running stat and open side by side gained
 * nothing. Synchronous I/O would stall every call on a hung mount, so: async.)
 */
export async function readFile(ctx: AgentContext, req: pb.ReadFileRequest): Promise<ReadFileResponseInit> {
  // Opens with O_NONBLOCK (a FIFO never blocks) and refuses all but regular files.
  const { abs, fh, st } = await openRegularFile(requestPath(ctx.dataDir, req), "ReadFile");
  let bytes: Buffer;
  try {
    if (st.size > READ_FILE_MAX_BYTES) throw tooLarge(abs, st.size);
    bytes = await readWhole(fh, abs, st.size);
  } finally {
    // Read-only: nothing to lose on close, so the reply need not wait for it.
    fh.close().catch(() => undefined);
  }
  const size = BigInt(bytes.byteLength);
  if (isBinary(bytes)) {
    return { content: "", totalLines: 0, lineOffset: req.lineOffset, lineCount: 0, truncated: false, binary: true, size };
  }
  const limit = req.lineLimit === 0 ? READ_FILE_DEFAULT_LINES : req.lineLimit;
  const w = lineWindow(bytes, req.lineOffset, limit);
  return {
    content: bytes.toString("utf8", w.start, w.end),
    totalLines: w.totalLines,
    lineOffset: req.lineOffset,
    lineCount: w.lineCount,
    truncated: w.truncated,
    binary: false,
    size,
  };
}

function tooLarge(abs: string, size: number): Error {
  return resourceExhausted(
    `${abs} is ${size} bytes, over ReadFile's limit of ${READ_FILE_MAX_BYTES} bytes; use ReadRaw to stream it`,
  );
}

/**
 * Reads up to `expected` bytes, or to EOF when stat reports 0 (procfs and
 * friends report 0 for files that do have content), refusing more than the limit.
 */
async function readWhole(fh: FileHandle, abs: string, expected: number): Promise<Buffer> {
  if (expected > 0) {
    const buf = Buffer.allocUnsafe(expected);
    let filled = 0;
    while (filled < expected) {
      const { bytesRead } = await fh.read(buf, filled, expected - filled, filled);
      if (bytesRead === 0) break; // shrank since fstat
      filled += bytesRead;
    }
    return filled === expected ? buf : buf.subarray(0, filled);
  }
  const parts: Buffer[] = [];
  let total = 0;
  for (;;) {
    const part = Buffer.allocUnsafe(64 * 1024);
    const { bytesRead } = await fh.read(part, 0, part.byteLength, null);
    if (bytesRead === 0) break;
    total += bytesRead;
    if (total > READ_FILE_MAX_BYTES) throw tooLarge(abs, total);
    parts.push(part.subarray(0, bytesRead));
  }
  return Buffer.concat(parts, total);
}

/** A NUL byte near the start, or bytes that are not UTF-8. */
export function isBinary(bytes: Buffer): boolean {
  const sniff = bytes.subarray(0, BINARY_SNIFF_BYTES);
  return sniff.indexOf(0) !== -1 || !isUtf8(bytes);
}

export interface LineWindow {
  /** Byte range of the window's lines, line endings included. */
  start: number;
  end: number;
  lineCount: number;
  /** Lines in the file; a last line without a newline counts, an empty file has none. */
  totalLines: number;
  /** More lines follow the window. */
  truncated: boolean;
}

/** Finds lines [offset, offset+limit) of `bytes`, counting every line of the file on the way. */
export function lineWindow(bytes: Uint8Array, offset: number, limit: number): LineWindow {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stopLine = offset + limit;
  let start = buf.byteLength;
  let end = buf.byteLength;
  let line = 0; // index of the line that begins at `pos`
  let pos = 0;
  while (pos < buf.byteLength) {
    if (line === offset) start = pos;
    if (line === stopLine) end = pos;
    const nl = buf.indexOf(NEWLINE, pos);
    pos = nl === -1 ? buf.byteLength : nl + 1;
    line++;
  }
  const totalLines = line;
  const lineCount = Math.max(0, Math.min(totalLines, stopLine) - offset);
  if (lineCount === 0) return { start: 0, end: 0, lineCount, totalLines, truncated: false };
  return { start, end, lineCount, totalLines, truncated: totalLines > stopLine };
}
