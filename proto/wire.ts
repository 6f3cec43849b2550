// Hand-written protobuf wire encoding for the few hot messages that carry
// bulk bytes. The layout must match the .proto; a unit test checks each
// encoder against protobuf-es's own decoder.

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

export interface WireField {
  field: number;
  /** A bytes field, or a non-negative integer below 2^53 (uint64/int64/uint32). */
  value: Uint8Array | number;
}

let scratch = Buffer.allocUnsafe(0);

/**
 * Like encodeFields, but into a scratch buffer shared by all callers: the
 * result is valid only until the next call. For serializers whose output the
 * caller copies right away (grpc-js's server does).
 */
export function encodeFieldsScratch(fields: WireField[]): Buffer {
  return encodeFields(fields, (size) => {
    if (scratch.length < size) scratch = Buffer.allocUnsafe(Math.max(size, 2 * scratch.length));
    return scratch.subarray(0, size);
  });
}

/** Encodes fields in order; zero integers and empty bytes are omitted, as proto3 does. */
export function encodeFields(fields: WireField[], alloc: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  let size = 0;
  for (const f of fields) {
    if (typeof f.value === "number") {
      if (f.value !== 0) size += varintSize(f.field << 3) + varintSize(f.value);
    } else if (f.value.length > 0) {
      size += varintSize(f.field << 3) + varintSize(f.value.length) + f.value.length;
    }
  }
  const buf = alloc(size);
  let pos = 0;
  for (const f of fields) {
    if (typeof f.value === "number") {
      if (f.value === 0) continue;
      if (!Number.isSafeInteger(f.value) || f.value < 0) throw new RangeError(`field ${f.field}: ${f.value} is not a non-negative safe integer`);
      pos = writeVarint(buf, pos, (f.field << 3) | WIRE_VARINT);
      pos = writeVarint(buf, pos, f.value);
    } else if (f.value.length > 0) {
      pos = writeVarint(buf, pos, (f.field << 3) | WIRE_LEN);
      pos = writeVarint(buf, pos, f.value.length);
      buf.set(f.value, pos);
      pos += f.value.length;
    }
  }
  return buf;
}

/** Bytes a gRPC frame starts with: a compressed flag (0) and the message's length (uint32 BE). */
export const GRPC_PREFIX_BYTES = 5;

/**
 * Room to leave before bulk bytes so that frameAround can put a whole frame's
 * head in front of them: the gRPC prefix, a few integer fields and the bytes
 * field's tag and length (at most 5 + 6 × 11 + 6 bytes).
 */
export const FRAME_HEADROOM_BYTES = 80;

/**
 * Makes buf[dataStart, dataEnd) the last field (`field`, bytes) of a message
 * whose other fields are `ints` (non-negative integers, zeros omitted), and that
 * message a whole gRPC frame: the head is written just before dataStart, over
 * whatever lies there, and the frame returned is a view of buf. The data is
 * never copied; fields out of number order are valid protobuf. Empty data is
 * omitted like any empty proto3 field.
 */
export function frameAround(buf: Buffer, dataStart: number, dataEnd: number, field: number, ints: WireField[]): Buffer {
  const dataLength = dataEnd - dataStart;
  let head = 0;
  for (const f of ints) {
    if (typeof f.value !== "number") throw new TypeError(`field ${f.field}: frameAround takes integer fields only`);
    if (!Number.isSafeInteger(f.value) || f.value < 0) throw new RangeError(`field ${f.field}: ${f.value} is not a non-negative safe integer`);
    if (f.value !== 0) head += varintSize(f.field << 3) + varintSize(f.value);
  }
  if (dataLength > 0) head += varintSize((field << 3) | WIRE_LEN) + varintSize(dataLength);
  const start = dataStart - GRPC_PREFIX_BYTES - head;
  if (start < 0 || dataLength < 0 || dataEnd > buf.byteLength) {
    throw new RangeError(`frameAround: ${dataStart} bytes before the data, ${GRPC_PREFIX_BYTES + head} needed`);
  }
  buf[start] = 0;
  buf.writeUInt32BE(head + dataLength, start + 1);
  let pos = start + GRPC_PREFIX_BYTES;
  for (const f of ints) {
    if (f.value === 0) continue;
    pos = writeVarint(buf, pos, (f.field << 3) | WIRE_VARINT);
    pos = writeVarint(buf, pos, f.value as number);
  }
  if (dataLength > 0) {
    pos = writeVarint(buf, pos, (field << 3) | WIRE_LEN);
    writeVarint(buf, pos, dataLength);
  }
  return buf.subarray(start, dataEnd);
}
