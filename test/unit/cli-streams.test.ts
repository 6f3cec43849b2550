// The CLI's readers of streamed answers (exec's NDJSON, SSE of create and the data
// operations) keep a UTF-8 character whole when a chunk boundary falls inside it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ndjsonLines, sseEvents } from "../../host/cli/streams.js";

async function* chunks(...parts: Buffer[]): AsyncGenerator<Buffer> {
  for (const p of parts) yield p;
}

/** `bytes` cut at every position, so some cut falls inside each multi-byte character. */
function everySplit(bytes: Buffer): Buffer[][] {
  return Array.from({ length: bytes.length - 1 }, (_, i) => [bytes.subarray(0, i + 1), bytes.subarray(i + 1)]);
}

test("ndjsonLines: a chunk boundary inside a multi-byte UTF-8 character keeps the character", async () => {
  const text = "héllo wörld ✓ 🙂\n";
  const bytes = Buffer.from(`${JSON.stringify({ stdout: text })}\n${JSON.stringify({ exit: { code: 0 } })}\n`);
  for (const parts of everySplit(bytes)) {
    const lines: unknown[] = [];
    for await (const l of ndjsonLines(chunks(...parts))) lines.push(l);
    assert.deepEqual(lines, [{ stdout: text }, { exit: { code: 0 } }], `split at ${parts[0]!.length}`);
  }
});

test("ndjsonLines: one byte per chunk", async () => {
  const bytes = Buffer.from(`${JSON.stringify({ stderr: "日本語 ✓" })}\n`);
  const lines: unknown[] = [];
  for await (const l of ndjsonLines(chunks(...Array.from(bytes, (b) => Buffer.from([b]))))) lines.push(l);
  assert.deepEqual(lines, [{ stderr: "日本語 ✓" }]);
});

test("sseEvents: a chunk boundary inside a multi-byte UTF-8 character keeps the character", async () => {
  const bytes = Buffer.from(`event: error\ndata: ${JSON.stringify({ message: "réseau indisponible ✗", code: "unavailable" })}\n\nevent: complete\ndata: {}\n\n`);
  for (const parts of everySplit(bytes)) {
    const events: unknown[] = [];
    for await (const e of sseEvents(chunks(...parts))) events.push(e);
    assert.deepEqual(
      events,
      [
        { event: "error", data: { message: "réseau indisponible ✗", code: "unavailable" } },
        { event: "complete", data: {} },
      ],
      `split at ${parts[0]!.length}`,
    );
  }
});
