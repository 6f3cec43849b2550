// The tool gateway's transport: one endpoint per bot that speaks both MCP lines over
// Streamable HTTP.
//  - 2026-07-28 (stateless: server/discover, per-request `_meta`): the SDK's
//    createMcpHandler in strict mode, a fresh server instance per request.
//  - 2025-11-25, 2025-06-18, 2025-03-26 (initialize, Mcp-Session-Id, SSE): requests the
//    SDK classifies as legacy go to a sessionful transport per session, kept here.
//    An unknown session id is 404 (the client initializes again), a missing one 400;
//    a session belongs to one bot, and one idle for `sessionIdleMs` is closed.
// Host and Origin are checked first on both lines (origin.ts).
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import {
  createMcpHandler,
  isInitializeRequest,
  isJsonContentType,
  isLegacyRequest,
  WebStandardStreamableHTTPServerTransport,
  type AuthInfo,
  type McpHttpHandler,
  type McpServer,
} from "@modelcontextprotocol/server";
import { describeError } from "../workspace/errors.js";
import { forbiddenResponse, hostOrOriginProblem } from "./origin.js";
import { createToolServer, type ToolServerDeps } from "./server.js";

export const DEFAULT_SESSION_IDLE_MS = 30 * 60_000;
export const DEFAULT_MAX_SESSIONS = 1000;
/** A tools/call of write carries the file: bodies up to 24 MiB (16 MiB of content in JSON). */
export const GATEWAY_BODY_LIMIT = 24 * 1024 * 1024;

export interface ToolGatewayOptions extends ToolServerDeps {
  /** A 2025-line session without requests for this long is closed (default 30 min). */
  sessionIdleMs?: number;
  /** Open sessions at most (all bots); past it the least recently used one is closed. */
  maxSessions?: number;
  /** Host names allowed besides loopback names and IP literals (DNS-rebinding protection). */
  allowedHostnames?: string[];
  /**
   * What the MCP SDK reports about a request it refused with a 4xx (malformed JSON or
   * JSON-RPC, a bad header…): the client's mistake, not the server's, so it is kept
   * out of `log` (errors). Without it, such reports are dropped.
   */
  logRefused?: (msg: string, data: Record<string, unknown>) => void;
}

/**
 * The errors the SDK reports (onerror) while one request is handled. Whether a report
 * is a failure of ours or a refusal of bad input is known only from the response the
 * SDK then gives: a 4xx is the client's, anything else (or a report after the response,
 * while its stream runs) is ours.
 */
interface RequestReports {
  errors: unknown[];
  answered: boolean;
}
const requestReports = new AsyncLocalStorage<RequestReports>();

/** Who is calling: the bot whose gateway it is, and the token used (its id, never the secret). */
export interface GatewayCaller {
  botId: string;
  tokenId: string;
}

interface LegacySession {
  id: string;
  botId: string;
  transport: WebStandardStreamableHTTPServerTransport;
  server: McpServer;
  lastUsed: number;
  /** Responses still streaming (an SSE stream keeps the session in use). */
  open: number;
}

function jsonRpcError(status: number, code: number, message: string): Response {
  return Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status });
}

function isInitialize(body: unknown): boolean {
  if (Array.isArray(body)) return body.some((m) => isInitializeRequest(m));
  return isInitializeRequest(body);
}

export class ToolGateway {
  private readonly modern: McpHttpHandler;
  private readonly sessions = new Map<string, LegacySession>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly idleMs: number;
  private readonly maxSessions: number;
  private closed = false;

  constructor(private readonly opts: ToolGatewayOptions) {
    this.idleMs = opts.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS;
    this.maxSessions = opts.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.modern = createMcpHandler(
      (ctx) => {
        const botId = (ctx.authInfo?.extra as { botId?: unknown } | undefined)?.botId;
        if (typeof botId !== "string") throw new Error("a gateway request without its bot");
        return createToolServer(botId, opts);
      },
      {
        legacy: "reject",
        maxRequestBodySize: GATEWAY_BODY_LIMIT,
        onerror: (err) => {
          const reports = requestReports.getStore();
          if (reports !== undefined && !reports.answered) reports.errors.push(err);
          else opts.log?.("mcp error", { err: describeError(err) });
        },
      },
    );
    this.sweeper = setInterval(() => this.evictIdle(), Math.max(1000, Math.min(60_000, Math.floor(this.idleMs / 4))));
    this.sweeper.unref();
  }

  /** Open 2025-line sessions (all bots). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /**
   * Serves one request to a bot's gateway. `parsedBody` is the POST body's JSON when it
   * parsed (the body itself stays readable on `request` for the SDK otherwise).
   */
  async handle(request: Request, caller: GatewayCaller, parsedBody: unknown): Promise<Response> {
    const problem = hostOrOriginProblem(request.headers.get("host"), request.headers.get("origin"), { allowedHostnames: this.opts.allowedHostnames ?? [] });
    if (problem !== undefined) return forbiddenResponse(problem);
    if (this.closed) return jsonRpcError(503, -32000, "the tool gateway is shutting down");
    if (request.method === "POST" && !isJsonContentType(request.headers.get("content-type"))) {
      return jsonRpcError(415, -32000, "Unsupported Media Type: Content-Type must be application/json");
    }
    const authInfo: AuthInfo = { token: caller.tokenId, clientId: caller.botId, scopes: [], extra: { botId: caller.botId } };
    const options = parsedBody === undefined ? { authInfo } : { authInfo, parsedBody };
    if (await isLegacyRequest(request, parsedBody, { maxRequestBodySize: GATEWAY_BODY_LIMIT })) return this.handleLegacy(request, caller, parsedBody, authInfo);
    const reports: RequestReports = { errors: [], answered: false };
    let response: Response | undefined;
    try {
      response = await requestReports.run(reports, () => this.modern.fetch(request, options));
      return response;
    } finally {
      reports.answered = true;
      const refused = response !== undefined && response.status >= 400 && response.status < 500;
      for (const err of reports.errors) {
        if (refused) this.opts.logRefused?.("mcp request refused", { status: response!.status, err: describeError(err) });
        else this.opts.log?.("mcp error", { err: describeError(err) });
      }
    }
  }

  private async handleLegacy(request: Request, caller: GatewayCaller, parsedBody: unknown, authInfo: AuthInfo): Promise<Response> {
    const options = parsedBody === undefined ? { authInfo } : { authInfo, parsedBody };
    const sessionId = request.headers.get("mcp-session-id");
    if (sessionId !== null) {
      const session = this.sessions.get(sessionId);
      // Another bot's session is as unknown here as one that never existed.
      if (session === undefined || session.botId !== caller.botId) return jsonRpcError(404, -32001, "Session not found: initialize a new session");
      session.lastUsed = Date.now();
      return this.tracked(session, await session.transport.handleRequest(request, options));
    }
    if (request.method === "POST" && parsedBody === undefined) return jsonRpcError(400, -32700, "Parse error: the request body is not valid JSON");
    if (request.method !== "POST" || !isInitialize(parsedBody)) {
      return jsonRpcError(400, -32000, "Bad Request: Mcp-Session-Id header is required (send initialize first to open a session)");
    }
    return this.openSession(request, caller, options);
  }

  private async openSession(request: Request, caller: GatewayCaller, options: { authInfo: AuthInfo; parsedBody?: unknown }): Promise<Response> {
    let session: LegacySession | undefined;
    const server = createToolServer(caller.botId, this.opts);
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        session = { id, botId: caller.botId, transport, server, lastUsed: Date.now(), open: 0 };
        this.sessions.set(id, session);
        this.enforceMaxSessions();
      },
      onsessionclosed: (id) => {
        this.sessions.delete(id);
      },
    });
    transport.onclose = () => {
      if (session !== undefined) this.sessions.delete(session.id);
    };
    await server.connect(transport);
    const response = await transport.handleRequest(request, options);
    if (session === undefined) {
      // The initialize was refused: nothing to keep.
      await server.close().catch(() => undefined);
      return response;
    }
    return this.tracked(session, response);
  }

  /** Counts a session's response as open until its body has been read or abandoned. */
  private tracked(session: LegacySession, response: Response): Response {
    if (response.body === null) return response;
    session.open++;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      session.open--;
      session.lastUsed = Date.now();
    };
    const reader = response.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done: end, value } = await reader.read();
          if (end) {
            finish();
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          finish();
          controller.error(err);
        }
      },
      async cancel(reason) {
        finish();
        await reader.cancel(reason);
      },
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  }

  private async closeSession(session: LegacySession): Promise<void> {
    this.sessions.delete(session.id);
    await session.transport.close().catch(() => undefined);
    await session.server.close().catch(() => undefined);
  }

  /** Closes sessions idle for longer than the idle time (none of whose responses is still streaming). */
  evictIdle(now = Date.now()): number {
    let n = 0;
    for (const s of [...this.sessions.values()]) {
      if (s.open === 0 && now - s.lastUsed >= this.idleMs) {
        void this.closeSession(s);
        n++;
      }
    }
    return n;
  }

  private enforceMaxSessions(): void {
    while (this.sessions.size > this.maxSessions) {
      let oldest: LegacySession | undefined;
      for (const s of this.sessions.values()) if (oldest === undefined || s.lastUsed < oldest.lastUsed) oldest = s;
      if (oldest === undefined) return;
      void this.closeSession(oldest);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    await Promise.all([...this.sessions.values()].map((s) => this.closeSession(s)));
    await this.modern.close();
  }
}
