// The hand-written wire encoder must produce what protobuf-es decodes to the same message.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { fromBinary } from "@bufbuild/protobuf";
import { ReadRawChunkSchema, ReadTreeMessageSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { encodeFields } from "../../proto/wire.js";

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
