import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { invalidArgument, RpcError, Status } from "../errors.js";
import { RAW_CHUNK_BYTES, RAW_READ_BLOCK_BYTES as READ_BLOCK_BYTES } from "../limits.js";
import { requestPath } from "../paths.js";
import type { Stats } from "node:fs";
import { openLeased } from "./read-lease.js";
import { openRegularFile } from "./open.js";
import { handOff } from "./read-raw-handoff.js";
import { callSignal, streamBudget } from "../budget.js";
import { preFramed } from "../../proto/rpc.js";
import { framesInPlace } from "../grpc/framed-send.js";
import { frameAround, FRAME_HEADROOM_BYTES } from "../../proto/wire.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type ReadRawCall = grpc.ServerWritableStream<pb.ReadRawRequest, MessageInitShape<typeof pb.ReadRawChunkSchema>>;

/** A chunk's place in a block: room for its frame's head, then its bytes. */
const SLOT_BYTES = FRAME_HEADROOM_BYTES + RAW_CHUNK_BYTES;

interface Block {
  /** Slots of SLOT_BYTES, the last one maybe shorter. */
  buf: Buffer;
  /** File bytes read into the slots, in order. */
  bytesRead: number;
  asked: number;
}

/** A non-negative int64 request field as a safe JS number. */
export function offsetField(value: bigint, field: string): number {
  if (value < 0n) throw invalidArgument(`${field} ${value} is negative`);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(`${field} ${value} is too large`);
  return Number(value);
}

/**
 * A file's bytes in RAW_CHUNK_BYTES chunks from `offset` for `length` bytes
 * (0 = to EOF). The first chunk carries file_size; a read that yields no bytes
 * (empty file, offset at EOF) still sends one empty chunk so the client learns
 * the size. An offset past EOF is OUT_OF_RANGE. Stops when the client cancels,
 * and waits for 'drain' when the transport is full.
 *
 * The stream leases what it may hold, two blocks, from its own
 * budget (budget.ts) for its whole life, up to the moment grpc-js has sent its
 * last chunk: a client that stops reading keeps its share and nothing more, and
 * streams beyond the budget wait in line or are refused (RESOURCE_EXHAUSTED)
 * before they allocate anything.
 *
 * A block is read with one readv(2) into slots, each with room before its
 * chunk, and every chunk goes out as a frame built around it in that room
 * (grpc/framed-send.ts): the file's bytes are never copied in the agent.
 *
 * Asked for a handoff, a file with a size gets one chunk naming the open descriptor
 * instead (read-raw-handoff.ts).
 */
export async function readRaw(ctx: AgentContext, req: pb.ReadRawRequest, call: ReadRawCall): Promise<void> {
  const target = requestPath(ctx.dataDir, req);
  const offset = offsetField(req.offset, "offset");
  const length = offsetField(req.length, "length");
  if (req.handoff) {
    // A file that reports size 0 (procfs, an empty file) is streamed: its bytes are
    // made when it is read, and the caller's read might make others than ours.
    const opened = await openRegularFile(target, "ReadRaw");
    if (opened.st.size > 0) return handOff(call, opened, offset);
    opened.fh.close();
  }
  // Opens with O_NONBLOCK (a FIFO never blocks) and refuses all but regular files.
  // Files that report size 0 (procfs) may hold anything: lease for full blocks.
  const need = (st: Stats): number => {
    const wanted = length === 0 ? Math.max(st.size - offset, 0) : length;
    const blocks = st.size === 0 ? 2 * READ_BLOCK_BYTES : Math.min(2 * READ_BLOCK_BYTES, wanted);
    // Each block's slots carry a frame's head; a grpc-js that copies frames holds one more chunk.
    return blocks + 2 * (READ_BLOCK_BYTES / RAW_CHUNK_BYTES) * FRAME_HEADROOM_BYTES + (framesInPlace() ? 0 : RAW_CHUNK_BYTES);
  };
  const { abs, fh, st, lease } = await openLeased(streamBudget(ctx), target, "ReadRaw", need, () => callSignal(call));
  const release = lease.release;
  // Released once grpc-js has written the last chunk ('finish') or the call is gone.
  call.once("finish", release);
  call.once("close", release);
  call.once("cancelled", release);
  if (call.cancelled || call.destroyed) release();
  try {
    // Files that report size 0 (procfs) may still have bytes: they are checked after the read.
    if (st.size > 0 && offset > st.size) {
      throw new RpcError(Status.OUT_OF_RANGE, `offset ${offset} is past the end of ${abs} (${st.size} bytes)`);
    }
    const fileSize = BigInt(st.size);
    const end = length === 0 ? Infinity : offset + length;
    // A file with a size: blocks no larger than what is left of it (+1 byte, to see growth),
    // so reading many small files allocates little; see the short read below.
    const sized = st.size > 0;
    // A block whose every chunk has been written to the socket, to be read into again.
    let spare: Buffer | undefined;
    const readBlock = (at: number): Promise<Block> => {
      const left = sized ? Math.max(RAW_CHUNK_BYTES, st.size - at + 1) : READ_BLOCK_BYTES;
      const asked = Math.min(READ_BLOCK_BYTES, end - at, left);
      const slots = Math.ceil(asked / RAW_CHUNK_BYTES);
      const size = slots * FRAME_HEADROOM_BYTES + asked;
      const buf = spare && spare.byteLength >= size ? spare : Buffer.allocUnsafe(size);
      spare = undefined;
      const parts: Buffer[] = [];
      for (let i = 0; i < slots; i++) {
        const from = i * SLOT_BYTES + FRAME_HEADROOM_BYTES;
        parts.push(buf.subarray(from, from + Math.min(RAW_CHUNK_BYTES, asked - i * RAW_CHUNK_BYTES)));
      }
      const read = fh.readv(parts, at).then(({ bytesRead }) => ({ buf, bytesRead, asked }));
      // Awaited later (maybe after a long drain): mark it handled so a failure is not "unhandled" meanwhile.
      read.catch(() => undefined);
      return read;
    };
    let pos = offset;
    let sent = 0;
    let next: Promise<Block> | undefined = pos < end ? readBlock(pos) : undefined;
    // The previous block, and a promise that resolves once its last chunk has been written to the socket.
    let previous: { buf: Buffer; sent: Promise<void> } | undefined;
    while (next && !call.cancelled) {
      const { buf, bytesRead, asked } = await next;
      next = undefined;
      if (bytesRead === 0) break;
      const blockEnd = pos + bytesRead;
      // A short read that reaches the file's size is its end as of that read (no read is
      // made to learn it). One before the size is not: a file of a kernel file system
      // reads short before its end (a sysfs binary attribute, such as the kernel's BTF,
      // gives 4 KiB a read; procfs files, size 0, any amount), and is read on until a read
      // yields nothing, as is a file that shrank.
      const atEnd = sized && bytesRead < asked && blockEnd >= st.size;
      let last: Promise<void> | undefined;
      for (let i = 0; i * RAW_CHUNK_BYTES < bytesRead && !call.cancelled; i++) {
        const from = i * SLOT_BYTES + FRAME_HEADROOM_BYTES;
        const length = Math.min(RAW_CHUNK_BYTES, bytesRead - i * RAW_CHUNK_BYTES);
        const frame = chunkFrame(buf, from, length, pos + i * RAW_CHUNK_BYTES, sent === 0 ? st.size : 0);
        let more = true;
        if ((i + 1) * RAW_CHUNK_BYTES >= bytesRead) last = new Promise<void>((resolve) => (more = call.write(frame, () => resolve())));
        else more = call.write(frame);
        sent++;
        if (!more) await drained(call);
      }
      // One block ahead, not more: the next block is read once the one before this has
      // been written to the socket (grpc-js would queue 16 messages, and a client's
      // library takes in 16 more, whatever their size), and into that block's buffer
      // (node's http2 completes a write only after the socket write that carried it).
      // The stream holds the two blocks it leased however slow its client, and a long
      // read allocates nothing after its first two blocks.
      if (previous && (await untilSent(call, previous.sent))) spare = previous.buf;
      previous = last ? { buf, sent: last } : undefined;
      pos = blockEnd;
      if (pos < end && !atEnd && !call.cancelled && !call.destroyed) next = readBlock(pos);
    }
    // Let a read still in flight finish before the handle is closed.
    await next?.catch(() => undefined);
    if (sent === 0 && !call.cancelled) {
      if (offset > st.size) {
        throw new RpcError(Status.OUT_OF_RANGE, `offset ${offset} is past the end of ${abs} (${st.size} bytes)`);
      }
      call.write({ data: new Uint8Array(0), offset: BigInt(offset), fileSize });
    }
  } finally {
    fh.close();
  }
}

/** ReadRawChunk{offset=2, file_size=3, data=1} framed around buf[from, from+length) (see proto/wire.ts). */
function chunkFrame(buf: Buffer, from: number, length: number, offset: number, fileSize: number): MessageInitShape<typeof pb.ReadRawChunkSchema> {
  return preFramed(
    frameAround(buf, from, from + length, 1, [
      { field: 2, value: offset },
      { field: 3, value: fileSize },
    ]),
  );
}

/**
 * Resolves true when `sent` does, false when the call is cancelled or closed first
 * (its pending writes then never complete, and their buffers must not be reused).
 */
function untilSent(call: ReadRawCall, sent: Promise<void>): Promise<boolean> {
  if (call.cancelled || call.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      call.off("cancelled", gone);
      call.off("close", gone);
      resolve(ok);
    };
    const gone = (): void => done(false);
    call.on("cancelled", gone);
    call.on("close", gone);
    void sent.then(() => done(true));
  });
}

/** Resolves when the stream can take more, or when it is cancelled or closed. */
function drained(call: ReadRawCall): Promise<void> {
  if (call.cancelled || call.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      call.off("drain", done);
      call.off("cancelled", done);
      call.off("close", done);
      resolve();
    };
    call.on("drain", done);
    call.on("cancelled", done);
    call.on("close", done);
  });
}
