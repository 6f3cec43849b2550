import { isUtf8 } from "node:buffer";
import type { Stats } from "node:fs";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { resourceExhausted, RpcError, Status } from "../errors.js";
import {
  BINARY_SNIFF_BYTES,
  READ_FILE_DEFAULT_LINES,
  READ_FILE_MAX_BYTES,
  READ_FILE_SCAN_BLOCK_BYTES,
  READ_FILE_WHOLE_MAX_BYTES,
  RESPONSE_COST_FACTOR,
} from "../limits.js";
import { callSignal, fileBudget, holdUntilCallEnds } from "../budget.js";
import { requestPath } from "../paths.js";
import { leaseForOpen, openLeased } from "./read-lease.js";
import { SYNC_READ_MAX_BYTES, type ReadFd } from "./fd.js";
import { preEncoded, preFramed } from "../../proto/rpc.js";
import { encodeFieldsScratch, frameAround, FRAME_HEADROOM_BYTES, type WireField } from "../../proto/wire.js";
import { framesInPlace } from "../grpc/framed-send.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type ReadFileResponseInit = MessageInitShape<typeof pb.ReadFileResponseSchema>;

const NEWLINE = 0x0a;

/**
 * A text file's lines in a window. Every byte held is leased from the file
 * budget first (budget.ts), and the response's bytes stay leased until the call
 * has ended (its message handed to HTTP/2, or the call gone).
 *
 * A file up to READ_FILE_WHOLE_MAX_BYTES is read whole: one open, one fstat,
 * usually one read, made synchronously while the file is small (fd.ts says when
 * and why). A larger one is scanned in READ_FILE_SCAN_BLOCK_BYTES
 * blocks to count its lines, find the window and check it is text, then only
 * the window's bytes are read: a few lines of a large log cost a block, not the file.
 */
export async function readFile(ctx: AgentContext, req: pb.ReadFileRequest, call?: CancellableCall): Promise<ReadFileResponseInit> {
  const target = requestPath(ctx.dataDir, req);
  const budget = fileBudget(ctx);
  let aborted: AbortSignal | undefined;
  const signal = (): AbortSignal | undefined => (call ? (aborted ??= callSignal(call)) : undefined);
  const limit = req.lineLimit === 0 ? READ_FILE_DEFAULT_LINES : req.lineLimit;
  // Text read from a file with a size is sent from the buffer it was read into (framed-send.ts).
  const factor = framesInPlace() ? 1 : RESPONSE_COST_FACTOR;
  const need = (st: Stats): number => {
    if (st.size > READ_FILE_MAX_BYTES) throw tooLarge(target.shown, st.size);
    // A file whose stat says 0 bytes (empty, or procfs and sysfs) is read whole in one pass:
    // procfs content may differ on every read, so it cannot be scanned first and read again.
    // It starts with a small lease and takes one for the whole limit if it turns out larger.
    if (st.size === 0) return UNSIZED_FIRST_BYTES * RESPONSE_COST_FACTOR;
    return st.size <= READ_FILE_WHOLE_MAX_BYTES ? FRAME_HEADROOM_BYTES + st.size * factor : READ_FILE_SCAN_BLOCK_BYTES;
  };
  // A file that changes while a large read waits for its window's lease is read again, a few times at most.
  for (let attempt = 1; ; attempt++) {
    // Opens with O_NONBLOCK (a FIFO never blocks) and refuses all but regular files.
    const leased = await openLeased(budget, target, "ReadFile", need, signal);
    const { fh, st, lease } = leased;
    let keepLease = false;
    try {
      if (st.size > 0 && st.size <= READ_FILE_WHOLE_MAX_BYTES) {
        const framing = await readWhole(fh, st.size, st.blocks > 0);
        keepLease = true;
        return holdUntilCallEnds(framedWholeResponse(framing, req.lineOffset, limit), lease, call);
      }
      if (st.size === 0) {
        const small = await readToEnd(fh, target.shown, UNSIZED_FIRST_BYTES);
        if (small) {
          keepLease = true;
          return holdUntilCallEnds(framedWholeResponse(small, req.lineOffset, limit), lease, call);
        }
        lease.release();
        const whole = await leaseForOpen(budget, target, "ReadFile", leased, READ_FILE_MAX_BYTES * RESPONSE_COST_FACTOR, signal);
        if (!whole) {
          if (attempt < 3) continue;
          throw new RpcError(Status.ABORTED, `${target.shown} kept changing while it was read; try again`);
        }
        try {
          const bytes = (await readToEnd(whole.fh, target.shown, READ_FILE_MAX_BYTES))!;
          return holdUntilCallEnds(framedWholeResponse(bytes, req.lineOffset, limit), whole.lease, call);
        } catch (err) {
          whole.lease.release();
          throw err;
        } finally {
          if (whole.fh !== fh) whole.fh.close();
        }
      }
      const scan = await scanLines(fh, target.shown, req.lineOffset, limit);
      if (scan.binary) return binaryResponse(req.lineOffset, BigInt(scan.size));
      const windowBytes = scan.end - scan.start;
      if (windowBytes === 0) return textResponse(Buffer.alloc(0), scan, req.lineOffset, scan.size);
      // The scan's block goes back before the window's bytes are asked for.
      lease.release();
      const windowed = await leaseForOpen(budget, target, "ReadFile", leased, FRAME_HEADROOM_BYTES + windowBytes * factor, signal);
      if (!windowed) {
        if (attempt < 3) continue;
        throw new RpcError(Status.ABORTED, `${target.shown} kept changing while it was read; try again`);
      }
      try {
        return holdUntilCallEnds(await readWindow(windowed.fh, scan, req.lineOffset), windowed.lease, call);
      } catch (err) {
        windowed.lease.release();
        throw err;
      } finally {
        if (windowed.fh !== fh) windowed.fh.close();
      }
    } finally {
      if (!keepLease) lease.release();
      fh.close();
    }
  }
}

/** A grpc-js call that may be cancelled (ServerUnaryCall). */
export interface CancellableCall {
  readonly cancelled: boolean;
  once(event: "cancelled", fn: () => void): unknown;
}

/**
 * The reply for a file read whole, its bytes after FRAME_HEADROOM_BYTES of room: the
 * window is sent from where it was read.
 */
function framedWholeResponse(framing: Buffer, lineOffset: number, limit: number): ReadFileResponseInit {
  const bytes = framing.subarray(FRAME_HEADROOM_BYTES);
  if (isBinary(bytes)) return binaryResponse(lineOffset, BigInt(bytes.byteLength));
  const w = lineWindow(bytes, lineOffset, limit);
  const frame = frameAround(framing, FRAME_HEADROOM_BYTES + w.start, FRAME_HEADROOM_BYTES + w.end, 1, responseFields(w, lineOffset, bytes.byteLength));
  return preFramed(frame);
}

/**
 * ReadFileResponse{content=1, total_lines=2, line_offset=3, line_count=4,
 * truncated=5, binary=6, size=7} of text, encoded by hand (proto/wire.ts):
 * the file's bytes, already checked to be UTF-8, go into the message as they
 * are, never through a JS string and protobuf-es's encoder (a copy less, and
 * no event-loop time spent decoding and re-encoding megabytes of text).
 */
function textResponse(content: Buffer, w: Omit<LineWindow, "start" | "end">, lineOffset: number, size: number): ReadFileResponseInit {
  return preEncoded(() => encodeFieldsScratch([{ field: 1, value: content }, ...responseFields(w, lineOffset, size)]));
}

/** The fields of a text ReadFileResponse besides content (binary=6 is false: omitted). */
function responseFields(w: Omit<LineWindow, "start" | "end">, lineOffset: number, size: number): WireField[] {
  return [
    { field: 2, value: w.totalLines },
    { field: 3, value: lineOffset },
    { field: 4, value: w.lineCount },
    { field: 5, value: w.truncated ? 1 : 0 },
    { field: 7, value: size },
  ];
}

function binaryResponse(lineOffset: number, size: bigint): ReadFileResponseInit {
  return { content: "", totalLines: 0, lineOffset, lineCount: 0, truncated: false, binary: true, size };
}

/**
 * The window a scan found, read after FRAME_HEADROOM_BYTES of room and sent as
 * a frame built around it (the other fields first, then content's tag and
 * length, then the file's bytes where they were read).
 */
async function readWindow(fh: ReadFd, scan: ScanResult, lineOffset: number): Promise<ReadFileResponseInit> {
  const windowBytes = scan.end - scan.start;
  const buf = Buffer.allocUnsafe(FRAME_HEADROOM_BYTES + windowBytes);
  let filled = 0;
  while (filled < windowBytes) {
    const { bytesRead } = await fh.read(buf, FRAME_HEADROOM_BYTES + filled, windowBytes - filled, scan.start + filled);
    if (bytesRead === 0) break; // shrank since the scan
    filled += bytesRead;
  }
  return preFramed(frameAround(buf, FRAME_HEADROOM_BYTES, FRAME_HEADROOM_BYTES + filled, 1, responseFields(scan, lineOffset, scan.size)));
}

interface ScanResult extends LineWindow {
  /** Bytes in the file (read to EOF). */
  size: number;
  binary: boolean;
}

/**
 * Reads the file to EOF in blocks, counting lines [offset, offset+limit) like
 * lineWindow() does and checking that it is text (no NUL in the first
 * BINARY_SNIFF_BYTES, valid UTF-8 throughout). Stops at the first sign of binary.
 */
async function scanLines(fh: ReadFd, abs: string, offset: number, limit: number): Promise<ScanResult> {
  const stopLine = offset + limit;
  const block = Buffer.allocUnsafe(READ_FILE_SCAN_BLOCK_BYTES);
  let start = -1;
  let end = -1;
  let line = 0; // index of the line that begins at `lineStart`
  let lineStart = 0;
  let atLineStart = true;
  let pos = 0; // file offset of block[0]
  let carry = 0; // bytes of an unfinished UTF-8 sequence kept at the block's head
  let binary = false;
  for (;;) {
    const { bytesRead } = await fh.read(block, carry, block.byteLength - carry, pos + carry);
    const n = carry + bytesRead;
    if (bytesRead === 0) {
      if (carry > 0) binary = true; // the file ends inside a UTF-8 sequence
      break;
    }
    if (pos + n > READ_FILE_MAX_BYTES) throw tooLarge(abs, pos + n);
    const fresh = block.subarray(carry, n);
    if (pos + carry < BINARY_SNIFF_BYTES && fresh.subarray(0, BINARY_SNIFF_BYTES - pos - carry).indexOf(0) !== -1) {
      binary = true;
      break;
    }
    // Validate up to the last complete character; the rest starts the next block.
    const cut = utf8Boundary(block, n);
    if (!isUtf8(block.subarray(0, cut))) {
      binary = true;
      break;
    }
    for (let i = carry; i < n; ) {
      if (atLineStart) {
        lineStart = pos + i;
        if (line === offset) start = lineStart;
        if (line === stopLine) end = lineStart;
        atLineStart = false;
      }
      const nl = fresh.indexOf(NEWLINE, i - carry);
      if (nl === -1) break;
      i = nl + carry + 1;
      line++;
      atLineStart = true;
    }
    // Move the unfinished sequence to the front.
    const rest = n - cut;
    if (rest > 0) block.copy(block, 0, cut, n);
    pos += cut;
    carry = rest;
  }
  const size = pos + carry;
  if (binary) return { start: 0, end: 0, lineCount: 0, totalLines: 0, truncated: false, size, binary };
  // A last line without a newline counts; an empty file has none.
  const totalLines = atLineStart ? line : line + 1;
  if (start === -1) start = size;
  if (end === -1) end = size;
  const lineCount = Math.max(0, Math.min(totalLines, stopLine) - offset);
  if (lineCount === 0) return { start: 0, end: 0, lineCount, totalLines, truncated: false, size, binary };
  return { start, end, lineCount, totalLines, truncated: totalLines > stopLine, size, binary };
}

/**
 * The end of the last complete UTF-8 character in buf[0, n): bytes after it
 * begin a sequence the next block finishes (at most 3). Invalid bytes are left
 * in, for isUtf8 to refuse.
 */
export function utf8Boundary(buf: Uint8Array, n: number): number {
  for (let back = 1; back <= 3 && back <= n; back++) {
    const b = buf[n - back]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back
    if (b < 0x80) return n; // ASCII: complete
    const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}

function tooLarge(abs: string, size: number): Error {
  return resourceExhausted(
    `${abs} is ${size} bytes, over ReadFile's limit of ${READ_FILE_MAX_BYTES} bytes; use ReadRaw to stream it`,
  );
}

/**
 * Reads from the start to EOF a file whose size fstat does not tell (procfs),
 * into a buffer with FRAME_HEADROOM_BYTES of room before the bytes.
 * Past `max` bytes: undefined when `max` is below the ReadFile limit (the
 * caller takes a larger lease and reads again), RESOURCE_EXHAUSTED at the limit.
 */
async function readToEnd(fh: ReadFd, abs: string, max: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let total = 0;
  for (;;) {
    const part = Buffer.allocUnsafe(64 * 1024);
    const { bytesRead } = await fh.read(part, 0, part.byteLength, total);
    if (bytesRead === 0) break;
    total += bytesRead;
    if (total > max) {
      if (max < READ_FILE_MAX_BYTES) return undefined;
      throw tooLarge(abs, total);
    }
    parts.push(part.subarray(0, bytesRead));
  }
  return Buffer.concat([Buffer.alloc(FRAME_HEADROOM_BYTES), ...parts], FRAME_HEADROOM_BYTES + total);
}

/** What a file whose stat size is 0 is first read with (most are empty or a few KiB). */
const UNSIZED_FIRST_BYTES = 256 * 1024;

/**
 * Reads up to `expected` bytes (fewer when the file shrank since fstat) after
 * FRAME_HEADROOM_BYTES of room for a frame's head: the result is the room and the bytes.
 * `stored`: the file has blocks on a disk or in memory (fstat's st_blocks > 0).
 */
async function readWhole(fh: ReadFd, expected: number, stored: boolean): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(FRAME_HEADROOM_BYTES + expected);
  let filled = 0;
  while (filled < expected) {
    const left = expected - filled;
    // A small stored file is read at once (fd.ts: a thread-pool trip costs more than the
    // read). One with no blocks behind its size is not: a sysfs attribute says 4096 bytes
    // and 0 blocks, and reading it runs driver code that may take its time.
    const bytesRead = stored && left <= SYNC_READ_MAX_BYTES ? fh.readNow(buf, FRAME_HEADROOM_BYTES + filled, left, filled) : (await fh.read(buf, FRAME_HEADROOM_BYTES + filled, left, filled)).bytesRead;
    if (bytesRead === 0) break; // shrank since fstat
    filled += bytesRead;
  }
  return filled === expected ? buf : buf.subarray(0, FRAME_HEADROOM_BYTES + filled);
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
