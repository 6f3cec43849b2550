// The tool gateway's input schemas keep zod's validation and convert to JSON Schema
// once (host/tools/schema-cache.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as z from "zod";
import { withCachedJsonSchema } from "../../host/tools/schema-cache.js";
import { BASE_TOOLS } from "../../host/tools/server.js";

const opts = { target: "draft-2020-12" };

test("every base tool's schema converts to the JSON Schema zod gives, once, and the result cannot be changed by a caller", () => {
  for (const def of BASE_TOOLS) {
    const wrapped = withCachedJsonSchema(def.inputSchema);
    assert.equal(withCachedJsonSchema(def.inputSchema), wrapped, `${def.name}: one wrapper per schema`);
    const first = wrapped["~standard"].jsonSchema.input(opts);
    assert.deepEqual(first, def.inputSchema["~standard"].jsonSchema.input(opts), `${def.name}: the same JSON Schema as zod's`);
    assert.equal(wrapped["~standard"].jsonSchema.input(opts), first, `${def.name}: converted once`);
    assert.ok(Object.isFrozen(first) && Object.isFrozen(first.properties as object), `${def.name}: frozen`);
  }
});

test("the wrapped schema validates as zod does: defaults applied, bad input refused with zod's issues", async () => {
  const schema = z.strictObject({ path: z.string().min(1), line_offset: z.number().int().min(1).default(1) });
  const wrapped = withCachedJsonSchema(schema);
  const ok = await wrapped["~standard"].validate({ path: "a.txt" });
  assert.deepEqual(ok, { value: { path: "a.txt", line_offset: 1 } });
  const bad = await wrapped["~standard"].validate({ path: "", extra: 1 });
  assert.ok("issues" in bad && bad.issues !== undefined && bad.issues.length >= 2, JSON.stringify(bad));
  // A different conversion target is converted (and kept) on its own.
  const other = wrapped["~standard"].jsonSchema.input({ target: "draft-07" });
  assert.notEqual(other, wrapped["~standard"].jsonSchema.input(opts));
});
