// The edit tool's matching: exact first, then whitespace-tolerant; uniqueness with the
// lines of every match; CRLF and BOM kept through decode and encode.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describeLines, findExact, findWhitespaceTolerant, planEdit } from "../../host/tools/edit-match.js";
import { decodeTextFile, encodeTextFile, normalizeInput } from "../../host/tools/text-file.js";

test("an exact unique match is replaced", () => {
  const r = planEdit("a\nfoo(1)\nb\n", "foo(1)", "foo(2)", false);
  assert.deepEqual(r, { ok: true, text: "a\nfoo(2)\nb\n", replaced: 1, mode: "exact" });
});

test("an ambiguous match is refused with the count and the lines of every match", () => {
  const text = "x = 1\ny = 2\nx = 1\nz\nx = 1\n";
  const r = planEdit(text, "x = 1", "x = 3", false);
  assert.equal(r.ok, false);
  assert.ok(!r.ok);
  assert.equal(r.problem, "ambiguous");
  assert.deepEqual(r.matches.map((m) => m.line), [1, 3, 5]);
  assert.equal(describeLines(r.matches), "lines 1, 3 and 5");
  const all = planEdit(text, "x = 1", "x = 3", true);
  assert.deepEqual(all, { ok: true, text: "x = 3\ny = 2\nx = 3\nz\nx = 3\n", replaced: 3, mode: "exact" });
});

test("indentation and trailing spaces that differ still match, and the file's indentation is kept", () => {
  const text = "def f():\n        if x:\n            return 1   \n        return 2\n";
  // The model wrote 4-space indentation where the file has 8 and 12, and no trailing spaces.
  const oldText = "    if x:\n        return 1\n";
  const newText = "    if x:\n        return 10\n    log(x)\n";
  const r = planEdit(text, oldText, newText, false);
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.mode, "whitespace");
  assert.equal(r.text, "def f():\n        if x:\n            return 10\n        log(x)\n        return 2\n");
});

test("whitespace-tolerant matching needs whitespace where old_text has it and none where it has none", () => {
  assert.equal(findWhitespaceTolerant("a  b\tc", "a b c").length, 1);
  assert.equal(findWhitespaceTolerant("ab c", "a b c").length, 0);
  assert.equal(findWhitespaceTolerant("foo(a,b)", "foo(a, b)").length, 0);
  const m = findWhitespaceTolerant("one\n  two\n\n three", "two three");
  assert.equal(m.length, 1);
  assert.equal(m[0]!.line, 2);
  // Regular-expression characters in old_text are literal.
  assert.equal(findWhitespaceTolerant("a.*b  (c)", "a.*b (c)").length, 1);
  assert.equal(findWhitespaceTolerant("axxb (c)", "a.*b (c)").length, 0);
});

test("deleting whole lines through a whitespace-tolerant match leaves no blank line", () => {
  const r = planEdit("keep\n    drop me  \nkeep too\n", "drop  me", "", false);
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.text, "keep\nkeep too\n");
});

test("an edit that changes nothing, an empty old_text and a missing text are refused", () => {
  assert.deepEqual(planEdit("abc", "b", "b", false), { ok: false, problem: "unchanged", matches: [] });
  assert.equal((planEdit("abc", "", "x", false) as { problem: string }).problem, "empty");
  assert.equal((planEdit("abc", "zzz", "x", false) as { problem: string }).problem, "not_found");
  // A tolerant match replaced by the very text the file has changes nothing.
  assert.equal((planEdit("x\n  a  b\n", "a b", " a  b ", false) as { problem: string }).problem, "unchanged");
});

test("exact matches do not overlap", () => {
  assert.deepEqual(findExact("aaaa", "aa").map((m) => m.start), [0, 2]);
});

test("a CRLF file with a BOM keeps both through an edit", () => {
  const bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("one\r\ntwo\r\nthree\r\n")]);
  const f = decodeTextFile(bytes, "f.txt");
  assert.equal(f.bom, true);
  assert.equal(f.eol, "\r\n");
  assert.equal(f.text, "one\ntwo\nthree\n");
  // The model may send either line ending.
  const r = planEdit(f.text, normalizeInput(f, "two\r\nthree"), normalizeInput(f, "2\nthree\nfour"), false);
  assert.ok(r.ok);
  assert.deepEqual(encodeTextFile(f, r.text), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("one\r\n2\r\nthree\r\nfour\r\n")]));
});

test("a file with mixed line endings is left as it is outside the edit", () => {
  const f = decodeTextFile(Buffer.from("a\r\nb\nc\r\n"), "m.txt");
  assert.equal(f.eol, "\n");
  assert.equal(f.bom, false);
  const r = planEdit(f.text, "b", "B", false);
  assert.ok(r.ok);
  assert.equal(encodeTextFile(f, r.text).toString(), "a\r\nB\nc\r\n");
});

test("binary files are refused with a message naming the file", () => {
  assert.throws(() => decodeTextFile(Buffer.from([0x61, 0x00, 0x62]), "bin.dat"), /bin\.dat is a binary file/);
  assert.throws(() => decodeTextFile(Buffer.from([0xff, 0xfe, 0x41]), "latin.txt"), /not UTF-8/);
});

test("a CRLF file with one \\r\\r\\n is not normalized, so that line survives an edit elsewhere", () => {
  const bytes = Buffer.from("one\r\ntwo\r\r\nthree\r\n");
  const f = decodeTextFile(bytes, "f.txt");
  assert.equal(f.eol, "\n");
  assert.deepEqual(encodeTextFile(f, f.text), bytes);
  const r = planEdit(f.text, "three", "THREE", false);
  assert.ok(r.ok);
  assert.equal(encodeTextFile(f, r.text).toString(), "one\r\ntwo\r\r\nTHREE\r\n");
  // A clean CRLF file still is normalized.
  assert.equal(decodeTextFile(Buffer.from("one\r\ntwo\r\n"), "g.txt").eol, "\r\n");
});

test("the whitespace-tolerant fallback matches whole lines only, never inside a line", () => {
  // "  x = 1;" is not in "max = 1;": without the exact match the fallback must not find it mid-line.
  const text = "let max = 1;\nlet y = 2;\n";
  assert.deepEqual(findWhitespaceTolerant(text, "  x = 1;"), []);
  assert.equal((planEdit(text, "  x = 1;", "  x = 5;", false) as { problem: string }).problem, "not_found");
  // Nor a line's beginning only: "x = 1" is not the line "x = 10;".
  assert.deepEqual(findWhitespaceTolerant("    x = 10;\n", "x  = 1"), []);
  assert.deepEqual(findWhitespaceTolerant("a b c\n", "b c"), []);
  // Whole lines are found whatever their indentation, trailing spaces and line endings.
  assert.deepEqual(findWhitespaceTolerant("max = 1;\n\tx = 1;  \r\n", "  x = 1;").map((m) => m.line), [2]);
  const r = planEdit("int max = 1;\n\tx  = 1;\n", "  x = 1;", "  x = 5;", false);
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.text, "int max = 1;\n\tx = 5;\n");
});
