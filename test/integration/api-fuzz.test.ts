// Every route of the real server's OpenAPI document, called with inputs made from its
// own schemas and a pool of hostile values (NUL, `..`, /proc and /sys paths, devices,
// numbers that are not finite, wrong types, unknown fields, bad JSON, other bot ids),
// from fixed seeds so that a failure can be replayed. No answer may be a 5xx or a
// broken connection, and the server must still serve afterwards. (Terminal, MCP and the
// long lifecycle operations — delete, stop, restore, import, rollback — have their own tests.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { request } from "undici";
import { startServerEnv, type ServerEnv } from "./env/server.js";

let s: ServerEnv;
const bot = "fuzz";

before(async () => {
  s = await startServerEnv();
});
after(async () => {
  await s?.close();
});

const STRINGS = [
  "", "a.txt", "d", "/data/a.txt", "../../etc/passwd", "/etc/passwd", "a\u0000b", "x".repeat(5000), "%00", "😀", ".", "..", "/",
  "d/../a.txt", "a.txt/", "\\", "'", "\"", "-1", "null", "/dev/zero", "/dev/urandom", "/dev/stdin", "/dev/null", "/proc/kcore",
  "/proc/self/mem", "/proc/self/fd/1", "/proc/1/root/etc", "/proc/x/y", "/sys/kernel", "/sys/fs/cgroup", "/run/memoh/bridge.sock",
  "/opt/memoh/agent.js", "/tmp", "a/".repeat(300),
];
const NUMBERS: unknown[] = ["Infinity", "-Infinity", "1e999", "0x10", " 5", 0, -1, 1, 2 ** 31, 2 ** 53, 1.5, "1", "x", null, true, [], {}];

function prng(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x / 0x7fffffff;
  };
}

type Schema = { type?: string; properties?: Record<string, Schema>; items?: Schema; anyOf?: Schema[]; oneOf?: Schema[]; enum?: unknown[]; additionalProperties?: unknown };

function generator(rnd: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const any = (): unknown => {
    const r = rnd();
    if (r < 0.4) return pick(STRINGS);
    if (r < 0.65) return pick(NUMBERS);
    if (r < 0.75) return { x: pick(STRINGS) };
    if (r < 0.85) return [pick(STRINGS), pick(STRINGS)];
    return pick([true, false, null]);
  };
  const fromSchema = (sch: Schema | undefined, depth = 0): unknown => {
    if (!sch || depth > 4 || rnd() < 0.15) return any();
    const alts = sch.anyOf ?? sch.oneOf;
    if (alts) return fromSchema(pick(alts), depth + 1);
    if (sch.enum) return rnd() < 0.8 ? pick(sch.enum) : any();
    switch (sch.type) {
      case "string":
        return pick(STRINGS);
      case "integer":
      case "number":
        return pick(NUMBERS);
      case "boolean":
        return rnd() < 0.8 ? rnd() < 0.5 : any();
      case "array":
        return Array.from({ length: Math.floor(rnd() * 3) }, () => fromSchema(sch.items, depth + 1));
      case "object": {
        const o: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(sch.properties ?? {})) if (rnd() < 0.8) o[k] = fromSchema(v, depth + 1);
        if (rnd() < 0.1) o.unexpected = any();
        if (sch.additionalProperties && typeof sch.additionalProperties === "object") o[pick(STRINGS) || "k"] = fromSchema(sch.additionalProperties as Schema, depth + 1);
        return o;
      }
      default:
        return any();
    }
  };
  return { pick, any, fromSchema };
}

const SKIPPED = (method: string, route: string) =>
  (route === "/bots/{bot_id}/container" && method === "delete") ||
  route.endsWith("/stop") ||
  route.includes("terminal") ||
  route.includes("/mcp") ||
  route.includes("/data/import") ||
  route.includes("/restore") ||
  route.includes("/rollback") ||
  route === "/tokens/{id}";

test("every route answers generated and hostile input with a 2xx, 3xx or 4xx, never a 5xx or a broken connection; the server still serves", async () => {
  const auth = { authorization: `Bearer ${s.adminToken}` };
  const call = async (method: string, path: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await request(`${s.url}${path}`, {
      method: method.toUpperCase() as "GET",
      headers: { ...auth, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
    });
    return { status: res.statusCode, text: await res.body.text() };
  };
  assert.equal((await call("post", `/bots/${bot}/container`, undefined)).status, 200);
  await call("post", `/bots/${bot}/container/fs/write`, { path: "a.txt", content: "hello\nworld\n" });
  await call("post", `/bots/${bot}/container/fs/mkdir`, { path: "d" });
  const doc = JSON.parse((await call("get", "/openapi.json", undefined)).text) as { paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string; schema: Schema }>; requestBody?: { content?: Record<string, { schema?: Schema }> } }>> };
  const failures: string[] = [];
  let sent = 0;
  for (const seed of [1, 2]) {
    const rnd = prng(seed);
    const g = generator(rnd);
    for (const [route, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        if (SKIPPED(method, route)) continue;
        for (let i = 0; i < 6; i++) {
          let path = route
            .replace("{bot_id}", rnd() < 0.85 ? bot : encodeURIComponent(String(g.pick(STRINGS))) || "x")
            .replace(/\{[a-z_]+\}/g, () => encodeURIComponent(String(g.pick([...STRINGS, ...NUMBERS]))) || "x");
          const query: string[] = [];
          for (const p of op.parameters ?? []) if (p.in === "query" && rnd() < 0.8) query.push(`${encodeURIComponent(p.name)}=${encodeURIComponent(String(g.fromSchema(p.schema)))}`);
          if (rnd() < 0.05) query.push("unknown=1");
          if (query.length > 0) path += `?${query.join("&")}`;
          const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
          const body = method === "get" || (method === "delete" && !bodySchema) ? undefined : bodySchema ? (rnd() < 0.05 ? "{not json" : g.fromSchema(bodySchema)) : rnd() < 0.5 ? undefined : g.any();
          const headers: Record<string, string> = route.endsWith("/fs/download") && rnd() < 0.5 ? { range: g.pick(["bytes=0-1", "bytes=5-", "bytes=-3", "bytes=9-1", "bytes=99999-", "garbage"]) } : {};
          sent++;
          const what = `seed ${seed}: ${method.toUpperCase()} ${path.slice(0, 200)} ${JSON.stringify(body)?.slice(0, 200) ?? ""}`;
          try {
            const r = await call(method, path, body, headers);
            if (r.status >= 500) failures.push(`${what} → ${r.status} ${r.text.slice(0, 300)}`);
          } catch (err) {
            failures.push(`${what} → ${String(err)}`);
          }
        }
      }
    }
  }
  assert.ok(sent > 300, `only ${sent} requests were made`);
  assert.deepEqual(failures, [], `${failures.length} of ${sent} requests failed`);
  assert.deepEqual(JSON.parse((await call("get", "/healthz", undefined)).text), { status: "ok" });
  // The workspace itself may be wrecked by what the calls did inside it (that is its own
  // business); the server must still describe it.
  assert.equal((await call("get", `/bots/${bot}/container`, undefined)).status, 200);
});
