// The CLI's HTTP client: undici against MEMOH_URL with MEMOH_TOKEN (default: the
// admin token file under the data root). API errors become CliError with the API's
// message; the CLI prints it and exits nonzero.
import fs from "node:fs";
import path from "node:path";
import { request, type Dispatcher } from "undici";

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = "CliError";
  }
}

export interface ClientConfig {
  url: string;
  token: string | undefined;
}

export function clientConfig(env: NodeJS.ProcessEnv = process.env): ClientConfig {
  const url = (env.MEMOH_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  let token = env.MEMOH_TOKEN;
  if (token === undefined) {
    const file = path.join(env.MEMOH_DATA_ROOT ?? "/var/lib/memoh", "admin-token");
    try {
      token = fs.readFileSync(file, "utf8").trim();
    } catch {
      token = undefined;
    }
  }
  return { url, token };
}

export class ApiClient {
  constructor(readonly config: ClientConfig) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.config.token ? { authorization: `Bearer ${this.config.token}` } : {}), ...extra };
  }

  /** A request whose answer is JSON; an error answer becomes a CliError with the API's message. */
  async json<T>(method: Dispatcher.HttpMethod, route: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, route, body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw apiError(res.statusCode, text);
    return (text === "" ? undefined : JSON.parse(text)) as T;
  }

  async raw(method: Dispatcher.HttpMethod, route: string, opts: { body?: Dispatcher.DispatchOptions["body"]; headers?: Record<string, string> } = {}): Promise<Dispatcher.ResponseData> {
    try {
      return await request(`${this.config.url}${route}`, {
        method,
        headers: this.headers(opts.headers),
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        headersTimeout: 0,
        bodyTimeout: 0,
      });
    } catch (err) {
      throw new CliError(`cannot reach ${this.config.url}: ${(err as Error).message} (is \`memoh-workspace serve\` running? MEMOH_URL sets the address)`);
    }
  }
}

export function apiError(status: number, text: string): CliError {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (parsed.error?.message) return new CliError(`${parsed.error.message} (${parsed.error.code ?? status})`);
  } catch {
    // not JSON
  }
  return new CliError(`HTTP ${status}: ${text.slice(0, 500)}`);
}

/** `BOT:/path` → {bot, path}; anything else is a local path. */
export function parseRemote(spec: string): { bot: string; path: string } | undefined {
  const m = /^([a-z0-9][a-z0-9_-]{0,63}):(.+)$/.exec(spec);
  return m ? { bot: m[1]!, path: m[2]! } : undefined;
}
