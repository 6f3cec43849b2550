// HPACK (RFC 7541), the header compression of HTTP/2, for the host's own HTTP/2
// client (h2-connection.ts): a decoder with the static and dynamic tables and the
// Huffman code, and an encoder that writes every field as a literal never added to
// the table (a request's few headers need nothing more).
//
// The decoder is written here rather than taken from a package: the one maintained
// HPACK implementation in Node is nghttp2 inside node:http2, which does not expose it,
// and the npm ones decode through a Duplex stream per block. It is small: the Huffman
// code is canonical, so the code of every symbol follows from its length alone
// (HUFFMAN_LENGTHS), checked in test/unit/bridge-hpack.test.ts against codes the RFC
// lists and against every byte value nghttp2 encodes.

/** A protocol violation in a header block: the connection must end (COMPRESSION_ERROR). */
export class HpackError extends Error {}

/** RFC 7541 Appendix A. Index 1 is the first entry. */
const STATIC_TABLE: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""], [":method", "GET"], [":method", "POST"], [":path", "/"], [":path", "/index.html"],
  [":scheme", "http"], [":scheme", "https"], [":status", "200"], [":status", "204"], [":status", "206"],
  [":status", "304"], [":status", "400"], [":status", "404"], [":status", "500"], ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""], ["accept", ""],
  ["access-control-allow-origin", ""], ["age", ""], ["allow", ""], ["authorization", ""], ["cache-control", ""],
  ["content-disposition", ""], ["content-encoding", ""], ["content-language", ""], ["content-length", ""],
  ["content-location", ""], ["content-range", ""], ["content-type", ""], ["cookie", ""], ["date", ""], ["etag", ""],
  ["expect", ""], ["expires", ""], ["from", ""], ["host", ""], ["if-match", ""], ["if-modified-since", ""],
  ["if-none-match", ""], ["if-range", ""], ["if-unmodified-since", ""], ["last-modified", ""], ["link", ""],
  ["location", ""], ["max-forwards", ""], ["proxy-authenticate", ""], ["proxy-authorization", ""], ["range", ""],
  ["referer", ""], ["refresh", ""], ["retry-after", ""], ["server", ""], ["set-cookie", ""],
  ["strict-transport-security", ""], ["transfer-encoding", ""], ["user-agent", ""], ["vary", ""], ["via", ""],
  ["www-authenticate", ""],
];

/**
 * The length in bits of the Huffman code of each symbol 0..255 and EOS (256), RFC 7541
 * Appendix B, written as runs: [length, symbols...] with ranges as [from, to].
 */
const HUFFMAN_RUNS: ReadonlyArray<readonly [number, ...Array<number | readonly [number, number]>]> = [
  [5, 0x30, 0x31, 0x32, 0x61, 0x63, 0x65, 0x69, 0x6f, 0x73, 0x74],
  [6, 0x20, 0x25, 0x2d, 0x2e, 0x2f, [0x33, 0x39], 0x3d, 0x41, 0x5f, 0x62, 0x64, 0x66, 0x67, 0x68, 0x6c, 0x6d, 0x6e, 0x70, 0x72, 0x75],
  [7, 0x3a, [0x42, 0x57], 0x59, 0x6a, 0x6b, 0x71, 0x76, 0x77, 0x78, 0x79, 0x7a],
  [8, 0x26, 0x2a, 0x2c, 0x3b, 0x58, 0x5a],
  [10, 0x21, 0x22, 0x28, 0x29, 0x3f],
  [11, 0x27, 0x2b, 0x7c],
  [12, 0x23, 0x3e],
  [13, 0x00, 0x24, 0x40, 0x5b, 0x5d, 0x7e],
  [14, 0x5e, 0x7d],
  [15, 0x3c, 0x60, 0x7b],
  [19, 0x5c, 0xc3, 0xd0],
  [20, 0x80, 0x82, 0x83, 0xa2, 0xb8, 0xc2, 0xe0, 0xe2],
  [21, 0x99, 0xa1, 0xa7, 0xac, 0xb0, 0xb1, 0xb3, 0xd1, 0xd8, 0xd9, 0xe3, 0xe5, 0xe6],
  [22, 0x81, 0x84, 0x85, 0x86, 0x88, 0x92, 0x9a, 0x9c, 0xa0, 0xa3, 0xa4, 0xa9, 0xaa, 0xad, 0xb2, 0xb5, 0xb9, 0xba, 0xbb, 0xbd, 0xbe, 0xc4, 0xc6, 0xe4, 0xe8, 0xe9],
  [23, 0x01, 0x87, [0x89, 0x8d], 0x8f, 0x93, 0x95, 0x96, 0x97, 0x98, 0x9b, 0x9d, 0x9e, 0xa5, 0xa6, 0xa8, 0xae, 0xaf, 0xb4, 0xb6, 0xb7, 0xbc, 0xbf, 0xc5, 0xe7, 0xef],
  [24, 0x09, 0x8e, 0x90, 0x91, 0x94, 0x9f, 0xab, 0xce, 0xd7, 0xe1, 0xec, 0xed],
  [25, 0xc7, 0xcf, 0xea, 0xeb],
  [26, 0xc0, 0xc1, 0xc8, 0xc9, 0xca, 0xcd, 0xd2, 0xd5, 0xda, 0xdb, 0xee, 0xf0, 0xf2, 0xf3, 0xff],
  [27, 0xcb, 0xcc, 0xd3, 0xd4, 0xd6, 0xdd, 0xde, 0xdf, 0xf1, [0xf4, 0xf8], [0xfa, 0xfe]],
  [28, [0x02, 0x08], 0x0b, 0x0c, [0x0e, 0x15], [0x17, 0x1f], 0x7f, 0xdc, 0xf9],
  [30, 0x0a, 0x0d, 0x16, 256],
];

/** Code length per symbol (index 256 = EOS). */
export const HUFFMAN_LENGTHS: readonly number[] = (() => {
  const lengths = new Array<number>(257).fill(0);
  for (const [length, ...symbols] of HUFFMAN_RUNS) {
    for (const s of symbols) {
      const [from, to] = typeof s === "number" ? [s, s] : s;
      for (let sym = from; sym <= to; sym++) lengths[sym] = length;
    }
  }
  return lengths;
})();

/** The canonical code of each symbol: codes assigned in order of (length, symbol). */
export const HUFFMAN_CODES: readonly number[] = (() => {
  const order = HUFFMAN_LENGTHS.map((len, sym) => ({ len, sym })).sort((a, b) => a.len - b.len || a.sym - b.sym);
  const codes = new Array<number>(257).fill(0);
  let code = 0;
  let len = order[0]!.len;
  for (const e of order) {
    code *= 2 ** (e.len - len);
    len = e.len;
    codes[e.sym] = code++;
  }
  return codes;
})();

/**
 * The decoding tree, flat: node n's children are at 2n (bit 0) and 2n+1 (bit 1); a value
 * >= 0 there is another node, a value < 0 is the leaf of symbol -(value + 1).
 */
const TREE: Int32Array = (() => {
  const tree = new Int32Array(2 * 512).fill(0);
  let nodes = 1;
  for (let sym = 0; sym <= 256; sym++) {
    const len = HUFFMAN_LENGTHS[sym]!;
    const code = HUFFMAN_CODES[sym]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = Math.floor(code / 2 ** i) & 1;
      const slot = 2 * node + bit;
      if (i === 0) tree[slot] = -(sym + 1);
      else {
        if (tree[slot] === 0) tree[slot] = nodes++;
        node = tree[slot]!;
      }
    }
  }
  return tree;
})();

export function huffmanDecode(bytes: Uint8Array): Buffer {
  const out: number[] = [];
  let node = 0;
  // Bits read since the last whole symbol, and whether they were all ones (valid padding).
  let pendingBits = 0;
  let allOnes = true;
  for (const byte of bytes) {
    for (let i = 7; i >= 0; i--) {
      const bit = (byte >> i) & 1;
      const next = TREE[2 * node + bit]!;
      pendingBits++;
      allOnes &&= bit === 1;
      if (next < 0) {
        const sym = -next - 1;
        if (sym === 256) throw new HpackError("a Huffman-coded string holds EOS");
        out.push(sym);
        node = 0;
        pendingBits = 0;
        allOnes = true;
      } else node = next;
    }
  }
  if (pendingBits > 7 || !allOnes) throw new HpackError("a Huffman-coded string ends with invalid padding");
  return Buffer.from(out);
}

/** An entry's size in the dynamic table: its octets and 32 (RFC 7541 4.1). */
const entrySize = (name: string, value: string) => name.length + value.length + 32;

/** One connection's header block decoder (its dynamic table lives as long as the connection). */
export class HpackDecoder {
  /** Newest first. */
  private readonly dynamic: Array<readonly [string, string]> = [];
  private size = 0;
  private maxSize: number;

  /**
   * @param tableLimit the SETTINGS_HEADER_TABLE_SIZE this side announced (4096 by default)
   * @param listLimit largest decoded header list (names, values and 32 per field) accepted
   */
  constructor(
    private readonly tableLimit = 4096,
    private readonly listLimit = 1024 * 1024,
  ) {
    this.maxSize = tableLimit;
  }

  /** The fields of one complete header block, in order. Throws HpackError on any violation. */
  decode(block: Uint8Array): Array<[string, string]> {
    const fields: Array<[string, string]> = [];
    let listSize = 0;
    let at = 0;
    let fieldsSeen = false;
    const int = (prefixBits: number): number => {
      const mask = (1 << prefixBits) - 1;
      let value = block[at++]! & mask;
      if (value < mask) return value;
      for (let shift = 0; ; shift += 7) {
        if (at >= block.length) throw new HpackError("a header block ends inside an integer");
        if (shift > 21) throw new HpackError("an integer in a header block is too large");
        const b = block[at++]!;
        value += (b & 0x7f) * 2 ** shift;
        if ((b & 0x80) === 0) return value;
      }
    };
    const str = (): string => {
      if (at >= block.length) throw new HpackError("a header block ends before a string");
      const huffman = (block[at]! & 0x80) !== 0;
      const length = int(7);
      if (at + length > block.length) throw new HpackError("a string runs past the end of its header block");
      const raw = block.subarray(at, at + length);
      at += length;
      return (huffman ? huffmanDecode(raw) : Buffer.from(raw.buffer, raw.byteOffset, raw.length)).toString("latin1");
    };
    const entry = (index: number): readonly [string, string] => {
      if (index === 0) throw new HpackError("header index 0");
      if (index <= STATIC_TABLE.length) return STATIC_TABLE[index - 1]!;
      const e = this.dynamic[index - STATIC_TABLE.length - 1];
      if (e === undefined) throw new HpackError(`header index ${index} is past the table`);
      return e;
    };
    while (at < block.length) {
      const b = block[at]!;
      let field: readonly [string, string];
      if (b & 0x80) {
        field = entry(int(7));
      } else if (b & 0x40) {
        const index = int(6);
        const name = index === 0 ? str() : entry(index)[0];
        field = [name, str()];
        this.add(field);
      } else if (b & 0x20) {
        if (fieldsSeen) throw new HpackError("a table size update after the first field of a block");
        const size = int(5);
        if (size > this.tableLimit) throw new HpackError(`a table size update to ${size} above the ${this.tableLimit} allowed`);
        this.maxSize = size;
        this.evict(0);
        continue;
      } else {
        // Without indexing (0000) or never indexed (0001): not added to the table.
        const index = int(4);
        const name = index === 0 ? str() : entry(index)[0];
        field = [name, str()];
      }
      fieldsSeen = true;
      listSize += entrySize(field[0], field[1]);
      if (listSize > this.listLimit) throw new HpackError(`a header list larger than ${this.listLimit} bytes`);
      fields.push([field[0], field[1]]);
    }
    return fields;
  }

  private add(field: readonly [string, string]): void {
    const size = entrySize(field[0], field[1]);
    // An entry larger than the table empties it and is not added (RFC 7541 4.4).
    this.evict(size);
    if (size <= this.maxSize) {
      this.dynamic.unshift(field);
      this.size += size;
    }
  }

  /** Drops the oldest entries until `room` more octets fit. */
  private evict(room: number): void {
    while (this.dynamic.length > 0 && this.size + room > this.maxSize) {
      const old = this.dynamic.pop()!;
      this.size -= entrySize(old[0], old[1]);
    }
  }
}

function encodeInt(out: number[], value: number, prefixBits: number, firstByte: number): void {
  const mask = (1 << prefixBits) - 1;
  if (value < mask) {
    out.push(firstByte | value);
    return;
  }
  out.push(firstByte | mask);
  value -= mask;
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

function encodeString(out: number[], text: string): void {
  const bytes = Buffer.from(text, "latin1");
  encodeInt(out, bytes.length, 7, 0);
  for (const b of bytes) out.push(b);
}

/**
 * A header block of literal fields never added to the peer's table (0000 + name index
 * or new name), names taken from the static table where it has them. Names must be
 * lowercase (HTTP/2); values are written as latin1, as node:http2 does.
 */
export function encodeHeaderBlock(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const index = STATIC_NAME_INDEX.get(name);
    if (index !== undefined) encodeInt(out, index, 4, 0x00);
    else {
      out.push(0x00);
      encodeString(out, name);
    }
    encodeString(out, value);
  }
  return Buffer.from(out);
}

const STATIC_NAME_INDEX: ReadonlyMap<string, number> = (() => {
  const m = new Map<string, number>();
  STATIC_TABLE.forEach(([name], i) => {
    if (!m.has(name)) m.set(name, i + 1);
  });
  return m;
})();
