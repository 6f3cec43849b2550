// A small client of the real server's API for data tests: any answer as status, text,
// JSON and bytes; `ok` for calls that must succeed; `sh` for a command that must exit 0.
import assert from "node:assert/strict";
import { request } from "undici";
import type { ServerEnv } from "./server.js";

export interface ApiAnswer {
  status: number;
  text: string;
  json: any;
  body: Buffer;
}

export interface ApiCallOptions {
  json?: unknown;
  raw?: Buffer;
  contentType?: string;
  accept?: string;
}

type Method = "GET" | "POST" | "DELETE";

/** The client of the server `env()` returns when called (the server starts in `before`). */
export function apiClient(env: () => ServerEnv) {
  async function api(method: Method, route: string, opts: ApiCallOptions = {}): Promise<ApiAnswer> {
    const s = env();
    const headers: Record<string, string> = { authorization: `Bearer ${s.adminToken}` };
    let body: Buffer | string | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.raw !== undefined) {
      headers["content-type"] = opts.contentType ?? "application/gzip";
      body = opts.raw;
    }
    if (opts.accept) headers.accept = opts.accept;
    const res = await request(`${s.url}${route}`, { method, headers, ...(body !== undefined ? { body } : {}), headersTimeout: 0, bodyTimeout: 0 });
    const buf = Buffer.from(await res.body.arrayBuffer());
    const text = buf.toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, text, json, body: buf };
  }
  async function ok(method: Method, route: string, opts: ApiCallOptions = {}): Promise<any> {
    const r = await api(method, route, opts);
    assert.equal(r.status, 200, `${method} ${route}: ${r.text}`);
    return r.json;
  }
  async function sh(bot: string, command: string): Promise<string> {
    const r = await ok("POST", `/bots/${bot}/container/exec`, { json: { command, timeout_s: 300 } });
    assert.equal(r.exit_code, 0, `${command}\n${r.stderr}`);
    return r.stdout as string;
  }
  return { api, ok, sh };
}
