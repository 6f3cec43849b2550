// A tool's input schema with its JSON Schema form computed once per process.
//
// The SDK converts a tool's schema to JSON Schema once per McpServer instance (for
// tools/list and for the Mcp-Param header check before a tools/call). The 2026-07-28
// line serves every request with a fresh instance, so that conversion ran on every
// call: zod's toJSONSchema was the largest single cost of a stateless tools/call in
// the gateway (7% of its CPU in a profile of 10,000 in-process calls; p50 0.42 ms per
// call with it, see BENCHMARKS.md for the end-to-end figures). The schemas never
// change, so the conversion is kept here; validation is still zod's own.
import type { StandardSchemaWithJSON } from "@modelcontextprotocol/server";

type Converter = (options: { target: string; libraryOptions?: Record<string, unknown> }) => Record<string, unknown>;

const cached = new WeakMap<object, unknown>();

function memo(convert: Converter): Converter {
  const byOptions = new Map<string, Record<string, unknown>>();
  return (options) => {
    const key = JSON.stringify(options);
    let out = byOptions.get(key);
    if (out === undefined) {
      // Frozen: every caller shares the one object.
      out = deepFreeze(convert(options));
      byOptions.set(key, out);
    }
    return out;
  };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** `schema` with the same validation and a JSON Schema form converted once per options. */
export function withCachedJsonSchema<S extends StandardSchemaWithJSON>(schema: S): S {
  const hit = cached.get(schema);
  if (hit !== undefined) return hit as S;
  const std = schema["~standard"];
  const wrapped = {
    "~standard": {
      ...std,
      jsonSchema: { input: memo(std.jsonSchema.input as Converter), output: memo(std.jsonSchema.output as Converter) },
    },
  } as unknown as S;
  cached.set(schema, wrapped);
  return wrapped;
}
