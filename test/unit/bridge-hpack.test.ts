// HPACK for the host's HTTP/2 client: the Huffman code built from code lengths alone
// against codes and examples of RFC 7541, the decoder against the RFC's request
// sequences (dynamic table included) and against every malformed input it must
// refuse, and the encoder's blocks read back by the decoder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HUFFMAN_CODES, HUFFMAN_LENGTHS, HpackDecoder, HpackError, encodeHeaderBlock, huffmanDecode } from "../../host/bridge/hpack.js";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

test("the Huffman code is complete and gives the codes RFC 7541 Appendix B lists", () => {
  assert.equal(HUFFMAN_LENGTHS.length, 257);
  assert.ok(HUFFMAN_LENGTHS.every((l) => l >= 5 && l <= 30));
  // A complete prefix code: the Kraft sum is exactly 1.
  assert.equal(HUFFMAN_LENGTHS.reduce((sum, l) => sum + 2 ** -l, 0), 1);
  const listed: Array<[number, number, number]> = [
    [0, 0x1ff8, 13],
    [1, 0x7fffd8, 23],
    [2, 0xfffffe2, 28],
    [9, 0xffffea, 24],
    [10, 0x3ffffffc, 30],
    [13, 0x3ffffffd, 30],
    [22, 0x3ffffffe, 30],
    [0x20, 0x14, 6],
    [0x30, 0x0, 5],
    [0x3a, 0x5c, 7],
    [0x74, 0x9, 5],
    [256, 0x3fffffff, 30],
  ];
  for (const [sym, code, len] of listed) assert.deepEqual([HUFFMAN_CODES[sym], HUFFMAN_LENGTHS[sym]], [code, len], `symbol ${sym}`);
  // The Huffman-coded strings of RFC 7541 C.4.
  assert.equal(huffmanDecode(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).toString(), "www.example.com");
  assert.equal(huffmanDecode(hex("a8eb 1064 9cbf")).toString(), "no-cache");
  assert.equal(huffmanDecode(hex("25a8 49e9 5ba9 7d7f")).toString(), "custom-key");
  assert.equal(huffmanDecode(hex("25a8 49e9 5bb8 e8b4 bf")).toString(), "custom-value");
});

test("a Huffman string with EOS, padding longer than 7 bits or padding of zeros is refused", () => {
  assert.throws(() => huffmanDecode(hex("ffff ffff")), HpackError); // EOS (30 ones) inside
  assert.throws(() => huffmanDecode(hex("07ff")), /invalid padding/); // "0" then 11 bits of padding
  assert.throws(() => huffmanDecode(hex("00")), /invalid padding/); // "0" then 000
  assert.equal(huffmanDecode(hex("07")).toString(), "0"); // "0" then 111
});

test("the RFC 7541 C.3 and C.4 request sequences decode, the dynamic table carried from block to block", () => {
  const sequences = [
    [
      "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
      "8286 84be 5808 6e6f 2d63 6163 6865",
      "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ],
    ["8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", "8286 84be 5886 a8eb 1064 9cbf", "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"],
  ];
  const expected = [
    [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
    [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"], ["cache-control", "no-cache"]],
    [[":method", "GET"], [":scheme", "https"], [":path", "/index.html"], [":authority", "www.example.com"], ["custom-key", "custom-value"]],
  ];
  for (const blocks of sequences) {
    const decoder = new HpackDecoder();
    blocks.forEach((block, i) => assert.deepEqual(decoder.decode(hex(block)), expected[i], block));
  }
});

test("malformed header blocks are refused: index 0 or past the table, a table larger than allowed, a size update after a field, truncation, a list too large", () => {
  const bad: Array<[string, RegExp]> = [
    ["80", /index 0/],
    ["be", /past the table/], // 62: the dynamic table is empty
    ["3fe2 1f", /above the 4096 allowed/], // 31 + 4066 = 4097
    ["82 20", /after the first field/],
    ["ff", /ends inside an integer/],
    ["41", /ends before a string/],
    ["4105 6162", /past the end/],
    ["ff ff ff ff ff 7f", /too large/],
  ];
  for (const [block, pattern] of bad) assert.throws(() => new HpackDecoder().decode(hex(block)), (err: unknown) => err instanceof HpackError && pattern.test(err.message), block);
  const small = new HpackDecoder(4096, 100);
  assert.throws(() => small.decode(encodeHeaderBlock([["x", "y".repeat(80)]])), /header list larger than 100 bytes/);
});

test("a table size update evicts; an entry larger than the table empties it", () => {
  const d = new HpackDecoder();
  // custom-key: custom-value added (index 62), then used.
  assert.deepEqual(d.decode(hex("400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65 be")), [
    ["custom-key", "custom-value"],
    ["custom-key", "custom-value"],
  ]);
  // Size 0 empties the table: index 62 is gone.
  assert.throws(() => d.decode(hex("20 be")), /past the table/);
  const e = new HpackDecoder();
  assert.deepEqual(e.decode(hex("3f e1 1f 40 01 61 01 62 be")), [["a", "b"], ["a", "b"]]); // a table of 4096 (31 + 4065), then a: b added and used
  const long = "v".repeat(5000);
  // "a": 5000 v's with incremental indexing; the length is 127 + 9 + 38 * 128.
  assert.deepEqual(e.decode(Buffer.concat([hex("40 01 61 7f 89 26"), Buffer.from(long)])), [["a", long]]);
  assert.throws(() => e.decode(hex("be")), /past the table/);
});

test("what the encoder writes the decoder reads back: static names by index, new names, long and latin1 values", () => {
  const fields: Array<[string, string]> = [
    [":method", "POST"],
    [":path", "/memoh.bridge.v1.ContainerService/ReadFile"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
    ["x-long", "z".repeat(300)],
    ["x-latin1", "caf\u00e9 \u00ff"],
  ];
  const block = encodeHeaderBlock(fields);
  assert.equal(block[0], 0x02, ":method by its static index, never indexed");
  assert.deepEqual(new HpackDecoder().decode(block), fields);
});
