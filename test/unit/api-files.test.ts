// Pure pieces of the file routes: Range parsing and file times a Date cannot hold.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isoTime, parseRange } from "../../host/api/routes/files.js";

test("parseRange: ranges, suffixes, open ends; unsatisfiable ones; garbage means the whole file", () => {
  assert.deepEqual(parseRange("bytes=4-6", 14), { start: 4, end: 6 });
  assert.deepEqual(parseRange("bytes=4-", 14), { start: 4, end: 13 });
  assert.deepEqual(parseRange("bytes=-6", 14), { start: 8, end: 13 });
  assert.deepEqual(parseRange("bytes=-60", 14), { start: 0, end: 13 });
  assert.deepEqual(parseRange("bytes=10-99", 14), { start: 10, end: 13 });
  assert.equal(parseRange("bytes=14-20", 14), "unsatisfiable");
  assert.equal(parseRange("bytes=-0", 14), "unsatisfiable");
  assert.equal(parseRange("bytes=-10", 0), "unsatisfiable");
  assert.equal(parseRange("bytes=0-", 0), "unsatisfiable");
  assert.equal(parseRange("bytes=0-1,4-5", 14), undefined);
  assert.equal(parseRange(undefined, 14), undefined);
});

test("isoTime: a file time beyond what a Date holds is clamped, not an exception", () => {
  assert.equal(isoTime(0), "1970-01-01T00:00:00.000Z");
  assert.equal(isoTime(1e17), "+275760-09-13T00:00:00.000Z");
  assert.equal(isoTime(-1e17), "-271821-04-20T00:00:00.000Z");
  assert.equal(isoTime(Number.NaN), "1970-01-01T00:00:00.000Z");
});
