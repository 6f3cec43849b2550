// The hand-written wire encoder must produce what protobuf-es decodes to the same message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { ReadFileResponseSchema, ReadRawChunkSchema, ReadTreeMessageSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { encodeFields, frameAround, FRAME_HEADROOM_BYTES, GRPC_PREFIX_BYTES } from "../../proto/wire.js";

test("encodeFields matches protobuf-es decoding of ReadRawChunk", () => {
  for (const [data, offset, fileSize] of [
    [randomBytes(65536), 0, 268435456],
    [randomBytes(10), 2 ** 40 + 7, 0],
    [Buffer.alloc(0), 127, 128],
    [randomBytes(300), 16383, 16384],
  ] as const) {
    const msg = fromBinary(ReadRawChunkSchema, encodeFields([
      { field: 1, value: data },
      { field: 2, value: offset },
      { field: 3, value: fileSize },
    ]));
    assert.deepEqual(Buffer.from(msg.data), Buffer.from(data));
    assert.equal(msg.offset, BigInt(offset));
    assert.equal(msg.fileSize, BigInt(fileSize));
  }
});

test("encodeFields matches protobuf-es decoding of ReadTreeMessage's data case", () => {
  for (const data of [randomBytes(1), randomBytes(127), randomBytes(128), randomBytes(256 * 1024)]) {
    const msg = fromBinary(ReadTreeMessageSchema, encodeFields([{ field: 2, value: data }]));
    assert.equal(msg.msg.case, "data");
    assert.deepEqual(Buffer.from(msg.msg.value as Uint8Array), data);
  }
});

test("encodeFields refuses values the varint writer cannot represent", () => {
  assert.throws(() => encodeFields([{ field: 2, value: -1 }]), RangeError);
  assert.throws(() => encodeFields([{ field: 2, value: 2 ** 60 }]), RangeError);
});

test("frameAround makes a gRPC frame around bytes in place that protobuf-es decodes, leaving the bytes where they were", () => {
  for (const [data, offset, fileSize] of [
    [randomBytes(65536), 2 ** 53 - 1, 2 ** 53 - 1],
    [randomBytes(10), 2 ** 40 + 7, 0],
    [Buffer.alloc(0), 127, 128],
    [randomBytes(300), 0, 0],
  ] as const) {
    const buf = Buffer.alloc(FRAME_HEADROOM_BYTES + data.byteLength + 7, 0xee);
    data.copy(buf, FRAME_HEADROOM_BYTES);
    const frame = frameAround(buf, FRAME_HEADROOM_BYTES, FRAME_HEADROOM_BYTES + data.byteLength, 1, [
      { field: 2, value: offset },
      { field: 3, value: fileSize },
    ]);
    // A view of buf, not a copy, ending where the data ends.
    assert.equal(frame.buffer, buf.buffer);
    assert.equal(frame.byteOffset + frame.byteLength, buf.byteOffset + FRAME_HEADROOM_BYTES + data.byteLength);
    assert.equal(frame[0], 0, "not compressed");
    assert.equal(frame.readUInt32BE(1), frame.byteLength - GRPC_PREFIX_BYTES);
    const msg = fromBinary(ReadRawChunkSchema, frame.subarray(GRPC_PREFIX_BYTES));
    assert.deepEqual(Buffer.from(msg.data), data);
    assert.equal(msg.offset, BigInt(offset));
    assert.equal(msg.fileSize, BigInt(fileSize));
    // The bytes after the data are untouched.
    assert.deepEqual(buf.subarray(FRAME_HEADROOM_BYTES + data.byteLength), Buffer.alloc(7, 0xee));
  }
});

test("frameAround fits the largest head of a ReadFile reply in FRAME_HEADROOM_BYTES and refuses less room", () => {
  const max = 2 ** 53 - 1;
  const u32 = 2 ** 32 - 1;
  const data = Buffer.from("line\n");
  const ints = [
    { field: 2, value: u32 },
    { field: 3, value: u32 },
    { field: 4, value: u32 },
    { field: 5, value: 1 },
    { field: 7, value: max },
  ];
  const buf = Buffer.alloc(FRAME_HEADROOM_BYTES + data.byteLength);
  data.copy(buf, FRAME_HEADROOM_BYTES);
  const frame = frameAround(buf, FRAME_HEADROOM_BYTES, buf.byteLength, 1, ints);
  const msg = fromBinary(ReadFileResponseSchema, frame.subarray(GRPC_PREFIX_BYTES));
  assert.equal(msg.content, "line\n");
  assert.equal(msg.totalLines, u32);
  assert.equal(msg.lineOffset, u32);
  assert.equal(msg.truncated, true);
  assert.equal(msg.size, BigInt(max));
  const head = frame.byteLength - data.byteLength;
  const tight = Buffer.alloc(head - 1 + data.byteLength);
  assert.throws(() => frameAround(tight, head - 1, tight.byteLength, 1, ints), /bytes before the data, \d+ needed/);
  assert.throws(() => frameAround(buf, FRAME_HEADROOM_BYTES, buf.byteLength, 1, [{ field: 2, value: -1 }]), RangeError);
});
