// Output truncation of the tool gateway: 64 KiB or 2,000 lines, head and tail kept
// with a marker between that says what was left out.
import { test } from "node:test";
import assert from "node:assert/strict";
import { OUTPUT_MAX_BYTES, OUTPUT_MAX_LINES, splitLines, truncateOutput, utf8Prefix, utf8Suffix } from "../../host/tools/truncate.js";

const MARKER = /\[\.\.\. (\d+) lines, (\d+) bytes omitted: output over 2000 lines or 65536 bytes keeps its head and tail \.\.\.\]/;

test("output within both limits is returned unchanged", () => {
  const text = "a\nb\nc\n";
  const r = truncateOutput(text);
  assert.equal(r.text, text);
  assert.equal(r.truncated, false);
  assert.equal(r.totalLines, 3);
  const exactly = "x\n".repeat(OUTPUT_MAX_LINES);
  assert.equal(truncateOutput(exactly).truncated, false, "exactly 2,000 lines fit");
});

test("more than 2,000 lines keep the first 1,000 and the last 1,000 with a marker naming the omitted lines", () => {
  const lines = Array.from({ length: 5000 }, (_, i) => `line ${i + 1}`);
  const r = truncateOutput(`${lines.join("\n")}\n`);
  assert.equal(r.truncated, true);
  assert.equal(r.totalLines, 5000);
  const out = splitLines(r.text).map((l) => l.replace(/\n$/, ""));
  assert.equal(out[0], "line 1");
  assert.equal(out[999], "line 1000");
  const m = MARKER.exec(out[1000]!);
  assert.ok(m, out[1000]);
  assert.equal(Number(m[1]), 3000);
  assert.equal(r.omittedLines, 3000);
  assert.equal(out[1001], "line 4001");
  assert.equal(out[out.length - 1], "line 5000");
  assert.equal(out.length, 2001);
});

test("more than 64 KiB on few lines keeps head and tail of at most 32 KiB each", () => {
  const line = `${"y".repeat(999)}\n`; // 1000 bytes
  const text = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, "0")}${line.slice(4)}`).join("");
  const r = truncateOutput(text);
  assert.equal(r.truncated, true);
  const [head, tail] = r.text.split(MARKER) as [string, ...string[]];
  assert.ok(Buffer.byteLength(head) <= OUTPUT_MAX_BYTES / 2, `head is ${Buffer.byteLength(head)} bytes`);
  assert.ok(r.text.startsWith("0000"));
  assert.ok(r.text.trimEnd().endsWith("y") && r.text.includes("0199"), "the last line is kept");
  assert.equal(r.omittedBytes + Buffer.byteLength(head) + Buffer.byteLength(r.text.slice(r.text.lastIndexOf("...]\n") + 5)), text.length);
  assert.ok(tail !== undefined);
});

test("a single line of a megabyte shows its start and its end, cut between characters", () => {
  const text = `START${"é".repeat(500_000)}END`;
  const r = truncateOutput(text);
  assert.equal(r.truncated, true);
  assert.ok(r.text.startsWith("START"));
  assert.ok(r.text.endsWith("END"));
  assert.ok(Buffer.byteLength(r.text) < OUTPUT_MAX_BYTES + 200);
  assert.ok(!r.text.includes("\uFFFD"), "no character was cut in half");
  assert.equal(r.omittedLines, 0);
  assert.equal(r.totalBytes, Buffer.byteLength(text));
});

test("utf8Prefix and utf8Suffix never split a multi-byte character", () => {
  assert.equal(utf8Prefix("aé", 2), "a");
  assert.equal(utf8Prefix("aé", 3), "aé");
  assert.equal(utf8Suffix("éa", 2), "a");
  assert.equal(utf8Suffix("😀b", 4), "b");
  assert.equal(utf8Suffix("😀b", 5), "😀b");
});

test("streamed output of any size keeps its first and last lines and counts what went by", async () => {
  const { OutputCollector } = await import("../../host/tools/output.js");
  const c = new OutputCollector();
  const lines = Array.from({ length: 200_000 }, (_, i) => `line ${i + 1}\n`);
  // Arrives in odd-sized chunks, as a pipe delivers it.
  const all = Buffer.from(lines.join(""));
  for (let i = 0; i < all.length; i += 7919) c.push(all.subarray(i, i + 7919));
  const t = c.text();
  assert.equal(t.truncated, true);
  assert.equal(t.totalLines, 200_000);
  assert.equal(t.totalBytes, all.length);
  const out = splitLines(t.text);
  assert.equal(out[0], "line 1\n");
  assert.equal(out[out.length - 1], "line 200000\n");
  const marker = out.find((l) => MARKER.test(l))!;
  const [, omittedLines, omittedBytes] = MARKER.exec(marker)!;
  const shown = out.filter((l) => l !== marker);
  assert.equal(Number(omittedLines) + shown.length, 200_000, "shown and omitted lines add up");
  assert.equal(Number(omittedBytes) + Buffer.byteLength(shown.join("")), all.length, "shown and omitted bytes add up");
  assert.ok(Buffer.byteLength(t.text) <= OUTPUT_MAX_BYTES + 200);
  // Small output is kept whole.
  const small = new OutputCollector();
  small.push(Buffer.from("a\nb"));
  assert.deepEqual({ text: small.text().text, lines: small.lines }, { text: "a\nb", lines: 2 });
});
