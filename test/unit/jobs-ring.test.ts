// The ring a job's output is kept in, and the glob matcher of Grep and Glob: pure logic.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Ring, type RingStorage } from "../../agent/jobs/ring.js";
import { compileGlob } from "../../agent/search/glob-match.js";
import { RpcError } from "../../agent/errors.js";

class MemoryStorage implements RingStorage {
  constructor(readonly bytes: Uint8Array) {}
  write(data: Uint8Array, position: number): void {
    assert.ok(position + data.byteLength <= this.bytes.byteLength, "a write stays inside the ring");
    this.bytes.set(data, position);
  }
  read(into: Uint8Array, position: number): void {
    into.set(this.bytes.subarray(position, position + into.byteLength));
  }
  close(): void {}
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

test("a ring keeps the last bytes written, addressed by their offset in the stream", () => {
  const ring = new Ring(new MemoryStorage(new Uint8Array(8)), 8);
  ring.write(enc("hello"));
  assert.deepEqual({ ...ring.read(0, 100), data: dec(ring.read(0, 100).data) }, { data: "hello", offset: 0, dropped: 0 });
  ring.write(enc(" world"));
  assert.equal(ring.total, 11);
  assert.equal(ring.start, 3);
  const r = ring.read(0, 100);
  assert.equal(dec(r.data), "lo world");
  assert.equal(r.offset, 3);
  assert.equal(r.dropped, 3);
  assert.equal(dec(ring.read(5, 3).data), " wo");
  assert.equal(dec(ring.read(11, 10).data), "");
  assert.equal(dec(ring.tail(4).data), "orld");
  assert.equal(ring.tail(4).offset, 7);
  assert.equal(dec(ring.tail(100).data), "lo world");
  assert.throws(() => ring.read(12, 1), /offset 12 is past the end of the stream \(11 bytes written\)/);
});

test("a write larger than the ring keeps only its last bytes, and offsets still count every byte", () => {
  const ring = new Ring(new MemoryStorage(new Uint8Array(4)), 4);
  ring.write(enc("ab"));
  ring.write(enc("0123456789"));
  assert.equal(ring.total, 12);
  const r = ring.read(0, 10);
  assert.deepEqual([dec(r.data), r.offset, r.dropped], ["6789", 8, 8]);
  ring.write(enc("X"));
  assert.equal(dec(ring.read(0, 10).data), "789X");
  assert.equal(dec(ring.read(10, 2).data), "89");
});

test("a ring refuses a capacity that is not a positive integer", () => {
  assert.throws(() => new Ring(new MemoryStorage(new Uint8Array(0)), 0), /positive integer/);
});

test("glob: * and ? stay within a component, ** spans components", () => {
  const m = (p: string, path: string) => compileGlob(p).matches(path);
  assert.equal(m("*.ts", "a.ts"), true);
  assert.equal(m("*.ts", "dir/a.ts"), false);
  assert.equal(m("*.ts", ".hidden.ts"), true);
  assert.equal(m("**/*.ts", "a.ts"), true);
  assert.equal(m("**/*.ts", "x/y/z.ts"), true);
  assert.equal(m("src/**", "src/a/b"), true);
  assert.equal(m("src/**", "srcx/a"), false);
  assert.equal(m("src/**/test/*.js", "src/test/a.js"), true);
  assert.equal(m("src/**/test/*.js", "src/a/b/test/a.js"), true);
  assert.equal(m("src/**/test/*.js", "src/a/b/test/x/a.js"), false);
  assert.equal(m("a?c", "abc"), true);
  assert.equal(m("a?c", "a/c"), false);
  assert.equal(m("a**b", "axxb"), true);
  assert.equal(m("a**b", "ax/xb"), false);
  assert.equal(m("./x.txt", "x.txt"), true);
});

test("glob: sets, negated sets, braces and escapes", () => {
  const m = (p: string, path: string) => compileGlob(p).matches(path);
  assert.equal(m("file[0-9].txt", "file7.txt"), true);
  assert.equal(m("file[0-9].txt", "filex.txt"), false);
  assert.equal(m("file[!0-9].txt", "filex.txt"), true);
  assert.equal(m("file[^0-9].txt", "file1.txt"), false);
  assert.equal(m("a[!x]b", "a/b"), false);
  assert.equal(m("[]]", "]"), true);
  assert.equal(m("*.{ts,js}", "a.js"), true);
  assert.equal(m("*.{ts,js}", "a.py"), false);
  assert.equal(m("{src,lib/{a,b}}/*.c", "lib/b/x.c"), true);
  assert.equal(m("{src,lib/{a,b}}/*.c", "lib/c/x.c"), false);
  assert.equal(m("\\*.txt", "*.txt"), true);
  assert.equal(m("\\*.txt", "a.txt"), false);
  assert.equal(m("a.b", "axb"), false, "a dot is a dot");
  assert.equal(m("(x)+", "(x)+"), true, "regular expression characters are literal");
  assert.equal(compileGlob("*.ts").nameOnly, true);
  assert.equal(compileGlob("src/*.ts").nameOnly, false);
});

test("glob: bad patterns are INVALID_ARGUMENT with what is wrong", () => {
  const bad = (p: string, re: RegExp) =>
    assert.throws(
      () => compileGlob(p, "pattern"),
      (e: unknown) => e instanceof RpcError && e.code === 3 && re.test(e.message),
    );
  bad("", /pattern is empty/);
  bad("a{b,c", /"\{" without its "\}"/);
  bad("a[bc", /"\[" without its "\]"/);
  bad("x\\", /lone backslash/);
  bad("/etc/*", /is absolute/);
  bad("**/a/**/b/**/c/**/d/**", /5 "\*\*" components, over the limit of 4/);
  bad("x".repeat(1025), /over the limit of 1024/);
});
