// One MCP server on stdio in a workspace, offered to HTTP clients as a Streamable
// HTTP MCP endpoint. A transport-level relay: the official SDK's sessionful
// WebStandardStreamableHTTPServerTransport speaks HTTP (sessions, SSE, headers,
// protocol-version checks) and every JSON-RPC message it receives goes to the
// server's stdin, every line the server writes goes back through it. Any method
// passes, not only tools.
//
// - Request ids are renumbered on the way in (the proxy's own probe and successive
//   client sessions share one server), and restored on the way out.
// - Server messages that are not responses go where they belong: progress to the
//   stream of the request that asked for it (by progress token); others to the
//   client's GET stream, else the stream of its latest request in flight. A server
//   request no client can receive is answered with an error at once, so the server
//   does not wait for nothing.
// - notifications/cancelled reaches the server under the renumbered id; the
//   cancelled request's response stream is then ended without an answer.
// - The probe initializes the server and lists its tools. A client's own
//   initialize goes to the server too (servers accept a second one), so the server
//   learns the client's real capabilities; a server that refuses it is answered
//   for with the probe's result.
// - One client session at a time: a new initialize replaces the previous session
//   (its requests in flight are cancelled at the server).
// - A server that dies answers every request in flight with an error carrying its
//   exit code and stderr tail; later requests learn the same from a 404.
//
// One file because it is one state machine: the renumbered ids, the requests in
// flight, the session and the server's end are read and changed by every method;
// the JSON-RPC shapes, limits, errors and web response writing are already apart.
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import {
  LATEST_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  WebStandardStreamableHTTPServerTransport,
  type JSONRPCMessage,
  type MessageExtraInfo,
} from "@modelcontextprotocol/server";
import { WorkspaceError } from "../../workspace/errors.js";
import type { StdioChannel, StdioChannelHandlers, StdioExit, StdioServerSpec } from "./channel.js";
import { McpServerStartError, describeExit, exitJson, stderrSuffix } from "./errors.js";
import {
  PROXY_ERROR,
  errorOf,
  errorResponse,
  isObject,
  parseServerLine,
  progressTokenOf,
  progressTokenParam,
  requestIdParam,
  resultOf,
  withParam,
  type JsonObject,
  type JsonRpcId,
  type ServerMessage,
} from "./jsonrpc.js";
import { EXIT_GRACE_MS, MAX_HTTP_BODY_BYTES, MAX_JSONRPC_BYTES, MAX_PENDING_REQUESTS, MAX_TOOL_PAGES } from "./limits.js";
import { writeWebResponse } from "./web-response.js";

export type EndReason =
  | { kind: "exited"; exit: StdioExit }
  | { kind: "failed"; message: string }
  | { kind: "deleted" }
  | { kind: "idle"; idleMs: number }
  | { kind: "shutdown" };

export type ConnectionState = "starting" | "ready" | "ended";

/** What the API lists about a connection (the server's environment is left out: it may hold secrets). */
export interface ConnectionInfo {
  connection_id: string;
  name: string;
  state: ConnectionState;
  pid: number | null;
  command: string;
  args: string[];
  cwd: string;
  created_at: string;
  last_active_at: string;
  requests_in_flight: number;
  session_open: boolean;
  server: { name: string | null; version: string | null; protocol_version: string | null };
  tool_count: number;
  ended: { at: string; reason: EndReason["kind"]; message: string; exit: ReturnType<typeof exitJson> | null } | null;
}

export interface StdioConnectionOptions {
  id: string;
  botId: string;
  name: string;
  spec: StdioServerSpec;
  /** A client that reads nothing of a response for this long is cut off (its session's other streams go on). */
  stallMs?: number;
  now?: () => number;
  log?: (message: string, data?: Record<string, unknown>) => void;
}

interface HttpSession {
  transport: WebStandardStreamableHTTPServerTransport;
  closed: boolean;
  /** Responses being written: those still blocked on their client when the session closes are cut off. */
  responses: Set<ServerResponse>;
  /** Open GET event streams: server-initiated messages go there first. */
  listeners: number;
}

type Pending =
  | { kind: "probe"; settle(outcome: { message: JsonObject } | { error: Error }): void }
  | {
      kind: "client";
      session: HttpSession;
      clientId: JsonRpcId;
      method: string;
      progressToken: JsonRpcId | undefined;
      /** The HTTP request it came in (requests of one POST share one response stream). */
      post: unknown;
      seq: number;
    };

class ProbeTimeout extends Error {}

/** The server ended (or the stream broke) while the probe waited. */
class EndedDuringProbe extends Error {
  constructor(readonly reason: EndReason) {
    super("ended");
  }
}

const ignore = (): void => undefined;

function containsInitialize(body: unknown): boolean {
  const items = Array.isArray(body) ? body : [body];
  return items.some((m) => isObject(m) && m.method === "initialize" && m.id !== undefined);
}

/** A JSON-RPC error as an HTTP answer (what MCP clients expect from this endpoint). */
export function writeJsonRpcError(res: ServerResponse, status: number, message: string, data?: unknown): void {
  const body = JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: PROXY_ERROR, message, ...(data !== undefined ? { data } : {}) } });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

export class StdioConnection {
  readonly id: string;
  readonly botId: string;
  readonly name: string;
  readonly spec: StdioServerSpec;
  readonly createdAt: number;
  state: ConnectionState = "starting";
  /** The tools the probe listed. */
  tools: JsonObject[] = [];

  private readonly now: () => number;
  private readonly stallMs: number | undefined;
  private readonly log: (message: string, data?: Record<string, unknown>) => void;
  private lastActiveAt: number;
  private channel: StdioChannel | undefined;
  private nextId = 1;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private readonly byProgressToken = new Map<JsonRpcId, number>();
  private session: HttpSession | undefined;
  /** The probe's initialize result: the answer for a client whose own initialize the server refuses. */
  private initResult: JsonObject | undefined;
  /** Protocol versions the HTTP side accepts in MCP-Protocol-Version: the SDK's, and any the server chose. */
  private readonly versions: string[] = [...SUPPORTED_PROTOCOL_VERSIONS];
  private ended: { reason: EndReason; at: number } | undefined;
  private exit: StdioExit | undefined;
  private readonly gone: Promise<void>;
  private markGone!: () => void;
  private isGone = false;
  /** HTTP responses whose client is not reading: while any is, the server's output is not read either. */
  private blockedWriters = 0;
  private endedDone: Promise<void> | undefined;

  constructor(opts: StdioConnectionOptions) {
    this.id = opts.id;
    this.botId = opts.botId;
    this.name = opts.name;
    this.spec = opts.spec;
    this.now = opts.now ?? Date.now;
    this.stallMs = opts.stallMs;
    this.log = opts.log ?? ignore;
    this.createdAt = this.now();
    this.lastActiveAt = this.createdAt;
    this.gone = new Promise((resolve) => {
      this.markGone = () => {
        this.isGone = true;
        resolve();
      };
    });
  }

  // ---------------------------------------------------------------- start and probe

  /**
   * Starts the server through `open`, initializes it and lists its tools, all within
   * `timeoutMs`. On failure the server is stopped and a WorkspaceError says why (for a
   * server that exited: its exit code and stderr, in the message and in `exit`).
   */
  async start(open: (handlers: StdioChannelHandlers) => Promise<StdioChannel>, timeoutMs: number): Promise<void> {
    let stage = "starting";
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ProbeTimeout()), timeoutMs);
    });
    timedOut.catch(ignore);
    const opening = open(this.channelHandlers());
    try {
      this.channel = await Promise.race([opening, timedOut]);
      stage = "initialize";
      const init = await Promise.race([
        this.probeRequest("initialize", { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: "memoh-workspace", version: "1" } }),
        timedOut,
      ]);
      const initError = errorOf(init);
      const result = resultOf(init);
      if (initError !== undefined || result === undefined) {
        throw new McpServerStartError("unavailable", `the MCP server "${this.name}" refused initialize: ${initError?.message ?? "its answer has no result"}`, undefined);
      }
      this.initResult = result;
      if (typeof result.protocolVersion === "string") this.acceptVersion(result.protocolVersion);
      this.sendToServer({ jsonrpc: "2.0", method: "notifications/initialized" });
      const capabilities = isObject(result.capabilities) ? result.capabilities : {};
      if (capabilities.tools !== undefined) {
        stage = "tools/list";
        this.tools = await Promise.race([this.listTools(), timedOut]);
      }
      this.state = "ready";
      this.touch();
    } catch (err) {
      if (this.channel === undefined) opening.then((late) => late.kill(), ignore);
      throw await this.startFailed(err, stage, timeoutMs);
    } finally {
      clearTimeout(timer);
    }
  }

  private async listTools(): Promise<JsonObject[]> {
    const tools: JsonObject[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_TOOL_PAGES; page++) {
      const reply = await this.probeRequest("tools/list", cursor === undefined ? undefined : { cursor });
      const error = errorOf(reply);
      if (error !== undefined) throw new McpServerStartError("unavailable", `the MCP server "${this.name}" failed tools/list: ${error.message}`, undefined);
      const result = resultOf(reply) ?? {};
      if (Array.isArray(result.tools)) for (const tool of result.tools) if (isObject(tool) && typeof tool.name === "string") tools.push(tool);
      if (typeof result.nextCursor !== "string" || result.nextCursor === "") break;
      cursor = result.nextCursor;
    }
    return tools;
  }

  private probeRequest(method: string, params: JsonObject | undefined): Promise<JsonObject> {
    return new Promise((resolve, reject) => {
      if (this.ended) return reject(new EndedDuringProbe(this.ended.reason));
      const id = this.nextId++;
      this.pending.set(id, { kind: "probe", settle: (outcome) => ("message" in outcome ? resolve(outcome.message) : reject(outcome.error)) });
      if (!this.sendToServer({ jsonrpc: "2.0", id, method, ...(params !== undefined ? { params } : {}) })) {
        this.pending.delete(id);
        reject(new WorkspaceError("unavailable", `the MCP server "${this.name}" does not take input`));
      }
    });
  }

  /** The error a failed start answers with; the server is stopped first. */
  private async startFailed(err: unknown, stage: string, timeoutMs: number): Promise<Error> {
    if (err instanceof EndedDuringProbe || this.ended?.reason.kind === "exited" || this.ended?.reason.kind === "failed") {
      const reason = err instanceof EndedDuringProbe ? err.reason : this.ended!.reason;
      await this.end(reason);
      if (reason.kind === "exited") {
        return new McpServerStartError("unavailable", `the MCP server "${this.name}" ${describeExit(reason.exit)} before it answered ${stage}${stderrSuffix(reason.exit)}`, reason.exit);
      }
      return new McpServerStartError("unavailable", reason.kind === "failed" ? `the MCP server "${this.name}" could not be run: ${reason.message}` : this.endMessage(), undefined);
    }
    if (err instanceof ProbeTimeout) {
      const what = stage === "starting" ? `was not started within ${timeoutMs / 1000} s` : `did not answer ${stage} within ${timeoutMs / 1000} s`;
      await this.end({ kind: "failed", message: what });
      const exit = this.exit;
      const after = exit === undefined ? "" : `; asked to stop, it ${describeExit(exit)}${stderrSuffix(exit)}`;
      return new McpServerStartError("deadline_exceeded", `the MCP server "${this.name}" ${what}${after}`, exit);
    }
    await this.end({ kind: "failed", message: err instanceof Error ? err.message : String(err) });
    return err instanceof Error ? err : new Error(String(err));
  }

  private channelHandlers(): StdioChannelHandlers {
    return {
      message: (text) => this.fromServer(text),
      noise: ignore,
      exit: (exit) => {
        this.exit = exit;
        this.markGone();
        if (!this.ended) void this.end({ kind: "exited", exit });
      },
      failure: (err) => {
        this.markGone();
        if (!this.ended) void this.end({ kind: "failed", message: `the workspace's agent ended the stream: ${err.message}` });
      },
    };
  }

  // ---------------------------------------------------------------- end

  /**
   * Ends the connection: requests in flight are answered with why, client streams
   * close, and a server still running gets EOF on stdin and EXIT_GRACE_MS to exit
   * before its process group is killed. Resolves once the server is gone.
   */
  end(reason: EndReason): Promise<void> {
    if (this.endedDone !== undefined) return this.endedDone;
    this.ended = { reason, at: this.now() };
    this.state = "ended";
    const message = this.endMessage();
    const data = this.endData();
    for (const [id, p] of [...this.pending]) {
      this.pending.delete(id);
      if (p.kind === "probe") p.settle({ error: new EndedDuringProbe(reason) });
      else if (!p.session.closed) this.deliver(p.session, errorResponse(p.clientId, PROXY_ERROR, message, data));
    }
    this.byProgressToken.clear();
    if (this.session !== undefined) this.closeSession(this.session, message);
    this.endedDone = (async () => {
      const channel = this.channel;
      if (channel === undefined || this.isGone) return;
      channel.closeStdin();
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), EXIT_GRACE_MS);
      });
      const exited = await Promise.race([this.gone.then(() => true), graceOver]);
      clearTimeout(timer);
      if (!exited) {
        channel.kill();
        await this.gone;
      }
    })();
    if (this.channel === undefined) this.markGone();
    this.log("mcp stdio connection ended", { bot: this.botId, connection: this.id, reason: reason.kind });
    return this.endedDone;
  }

  /** How the connection ended, for clients (names the exit code and the end of stderr). */
  endMessage(): string {
    const reason = this.ended?.reason;
    switch (reason?.kind) {
      case undefined:
        return `the connection ${this.id} is open`;
      case "exited":
        return `the MCP server "${this.name}" ${describeExit(reason.exit)}${stderrSuffix(reason.exit)}`;
      case "failed":
        return `the MCP server "${this.name}" is gone: ${reason.message}`;
      case "deleted":
        return `the connection ${this.id} to the MCP server "${this.name}" was ended`;
      case "idle":
        return `the connection ${this.id} to the MCP server "${this.name}" was closed after ${reason.idleMs / 1000} s without a request`;
      case "shutdown":
        return `the connection ${this.id} was closed: the orchestrator is shutting down`;
    }
  }

  private endData(): JsonObject {
    const exit = this.ended?.reason.kind === "exited" ? this.ended.reason.exit : this.exit;
    return { connection_id: this.id, reason: this.ended?.reason.kind ?? null, ...(exit !== undefined ? { exit: exitJson(exit) } : {}) };
  }

  // ---------------------------------------------------------------- HTTP side

  /** Whether an Mcp-Session-Id header names another session than the current one. */
  isForeignSession(sessionId: string | undefined): boolean {
    return sessionId !== undefined && sessionId !== this.session?.transport.sessionId;
  }

  /** Serves one HTTP request of the MCP endpoint (POST, GET for the event stream); `parsedBody` is the POST's JSON. */
  async serveHttp(request: Request, parsedBody: unknown, res: ServerResponse): Promise<void> {
    this.touch();
    if (this.state === "ended") return writeJsonRpcError(res, 404, this.endMessage(), this.endData());
    if (this.state !== "ready") return writeJsonRpcError(res, 409, `the MCP server "${this.name}" is still starting`);
    let session = this.session;
    let fresh = false;
    if (request.method === "POST" && containsInitialize(parsedBody)) {
      session = this.newSession();
      fresh = true;
    } else if (session === undefined) {
      if (request.headers.get("mcp-session-id") !== null) return writeJsonRpcError(res, 404, "Session not found: initialize a new session");
      return writeJsonRpcError(res, 400, "Bad Request: no session; send initialize first");
    }
    const response = await session.transport.handleRequest(request, { parsedBody });
    if (fresh && session.transport.sessionId === undefined) void session.transport.close();
    const listening = request.method === "GET" && response.status === 200;
    if (listening) session.listeners++;
    session.responses.add(res);
    try {
      await writeWebResponse(res, response, {
        ...(this.stallMs !== undefined ? { stallMs: this.stallMs } : {}),
        blocked: () => {
          if (this.blockedWriters++ === 0) this.channel?.pause();
        },
        drained: () => {
          if (--this.blockedWriters === 0) this.channel?.resume();
        },
      });
    } finally {
      session.responses.delete(res);
      if (listening) session.listeners--;
    }
  }

  private newSession(): HttpSession {
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: () => this.adopt(session),
      maxRequestBodySize: MAX_HTTP_BODY_BYTES,
      supportedProtocolVersions: this.versions,
    });
    const session: HttpSession = { transport, closed: false, responses: new Set(), listeners: 0 };
    transport.onmessage = (message, extra) => this.fromClient(session, message, extra);
    // Each error is already answered to the client that caused it.
    transport.onerror = ignore;
    return session;
  }

  /** A new session was initialized: it replaces the previous one. */
  private adopt(session: HttpSession): void {
    const previous = this.session;
    this.session = session;
    if (previous !== undefined && previous !== session) this.closeSession(previous, "a new MCP session was initialized on this connection");
  }

  private closeSession(session: HttpSession, why: string): void {
    if (session.closed) return;
    session.closed = true;
    for (const [id, p] of [...this.pending]) {
      if (p.kind !== "client" || p.session !== session) continue;
      this.dropPending(id);
      this.sendToServer({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: id, reason: why } });
    }
    if (this.session === session) this.session = undefined;
    void session.transport.close();
    // Its streams are ended; one whose client does not read would never finish (and holds the server's output).
    for (const res of session.responses) if (res.writableNeedDrain) res.destroy();
  }

  private acceptVersion(version: string): void {
    if (this.versions.includes(version)) return;
    this.versions.push(version);
    this.session?.transport.setSupportedProtocolVersions(this.versions);
  }

  // ---------------------------------------------------------------- client → server

  private fromClient(session: HttpSession, message: JSONRPCMessage, extra: MessageExtraInfo | undefined): void {
    const m = message as unknown as JsonObject;
    const isRequest = typeof m.method === "string" && m.id !== undefined;
    if (session.closed || this.state !== "ready") {
      if (isRequest) this.deliver(session, errorResponse(m.id as JsonRpcId, PROXY_ERROR, this.endMessage()));
      return;
    }
    this.touch();
    if (isRequest) this.forwardRequest(session, m, extra?.request);
    else if (m.method === "notifications/cancelled") this.forwardCancel(session, m);
    // Notifications, and the client's answers to the server's requests (ids are the server's own).
    else this.sendToServer(m);
  }

  private forwardRequest(session: HttpSession, m: JsonObject, post: unknown): void {
    const clientId = m.id as JsonRpcId;
    const refuse = (why: string) => this.deliver(session, errorResponse(clientId, PROXY_ERROR, why));
    if (this.pending.size >= MAX_PENDING_REQUESTS) return refuse(`too many requests in flight on this connection (at most ${MAX_PENDING_REQUESTS})`);
    const proxyId = this.nextId++;
    const text = JSON.stringify({ ...m, id: proxyId });
    if (Buffer.byteLength(text) > MAX_JSONRPC_BYTES) return refuse(`the request is larger than ${MAX_JSONRPC_BYTES} bytes`);
    const progressToken = progressTokenOf(m);
    this.pending.set(proxyId, { kind: "client", session, clientId, method: m.method as string, progressToken, post, seq: ++this.seq });
    if (progressToken !== undefined) this.byProgressToken.set(progressToken, proxyId);
    if (!this.channel!.send(text)) {
      this.dropPending(proxyId);
      refuse(`the MCP server "${this.name}" is not reading its input (too much is queued)`);
    }
  }

  private forwardCancel(session: HttpSession, m: JsonObject): void {
    const clientId = requestIdParam(m, "requestId");
    for (const [proxyId, p] of this.pending) {
      if (p.kind !== "client" || p.session !== session || p.clientId !== clientId) continue;
      this.dropPending(proxyId);
      this.sendToServer(withParam(m, "requestId", proxyId));
      // No answer follows a cancelled request: its response stream ends here, unless
      // another request of the same POST still waits on it.
      const shared = [...this.pending.values()].some((q) => q.kind === "client" && q.post === p.post);
      if (!shared) session.transport.closeSSEStream(clientId);
      return;
    }
    // Answered already (or never seen): nothing to cancel.
  }

  private dropPending(proxyId: number): void {
    const p = this.pending.get(proxyId);
    this.pending.delete(proxyId);
    if (p?.kind === "client" && p.progressToken !== undefined && this.byProgressToken.get(p.progressToken) === proxyId) this.byProgressToken.delete(p.progressToken);
  }

  private sendToServer(message: JsonObject): boolean {
    return this.channel?.send(JSON.stringify(message)) ?? false;
  }

  // ---------------------------------------------------------------- server → client

  private fromServer(text: string): void {
    for (const m of parseServerLine(text)) {
      if (m.kind === "response") this.onServerResponse(m.id, m.message);
      else this.onServerInitiated(m);
    }
  }

  private onServerResponse(id: JsonRpcId, message: JsonObject): void {
    if (typeof id !== "number") return;
    const p = this.pending.get(id);
    if (p === undefined) return; // cancelled, or its session ended
    this.dropPending(id);
    if (p.kind === "probe") return p.settle({ message });
    if (p.session.closed) return;
    let out: JsonObject = { ...message, id: p.clientId };
    if (p.method === "initialize") {
      const result = resultOf(out);
      if (result !== undefined && typeof result.protocolVersion === "string") this.acceptVersion(result.protocolVersion);
      else if (this.initResult !== undefined) out = { jsonrpc: "2.0", id: p.clientId, result: this.initResult };
    }
    this.deliver(p.session, out);
  }

  private onServerInitiated(m: Exclude<ServerMessage, { kind: "response" }>): void {
    let target: { session: HttpSession; related: JsonRpcId | undefined } | undefined;
    if (m.kind === "notification" && m.method === "notifications/progress") {
      const token = progressTokenParam(m.message);
      const proxyId = token === undefined ? undefined : this.byProgressToken.get(token);
      const p = proxyId === undefined ? undefined : this.pending.get(proxyId);
      if (p?.kind === "client" && !p.session.closed) target = { session: p.session, related: p.clientId };
    }
    target ??= this.streamForServerMessages();
    if (target !== undefined) {
      this.deliver(target.session, m.message, target.related);
      return;
    }
    // Nobody can receive it. A notification may be dropped; a request must not wait for ever.
    if (m.kind === "request") this.sendToServer(errorResponse(m.id, PROXY_ERROR, `no MCP client is connected to receive ${m.method}`));
  }

  /** The client's GET stream, else the stream of its latest request in flight. */
  private streamForServerMessages(): { session: HttpSession; related: JsonRpcId | undefined } | undefined {
    const session = this.session;
    if (session === undefined || session.closed) return undefined;
    if (session.listeners > 0) return { session, related: undefined };
    let latest: Extract<Pending, { kind: "client" }> | undefined;
    for (const p of this.pending.values()) if (p.kind === "client" && p.session === session && (latest === undefined || p.seq > latest.seq)) latest = p;
    return latest === undefined ? undefined : { session, related: latest.clientId };
  }

  private deliver(session: HttpSession, message: JsonObject, related?: JsonRpcId): void {
    session.transport.send(message as unknown as JSONRPCMessage, related !== undefined ? { relatedRequestId: related } : undefined).catch(ignore);
  }

  // ---------------------------------------------------------------- state

  private touch(): void {
    this.lastActiveAt = this.now();
  }

  /** When the connection last saw its client, or undefined while a request is in flight (it is not idle then). */
  idleSince(): number | undefined {
    for (const p of this.pending.values()) if (p.kind === "client") return undefined;
    return this.lastActiveAt;
  }

  endedAt(): number | undefined {
    return this.ended?.at;
  }

  get pid(): number | undefined {
    return this.channel?.pid;
  }

  info(): ConnectionInfo {
    const serverInfo = isObject(this.initResult?.serverInfo) ? this.initResult.serverInfo : {};
    const exit = this.ended?.reason.kind === "exited" ? this.ended.reason.exit : this.exit;
    return {
      connection_id: this.id,
      name: this.name,
      state: this.state,
      pid: this.channel?.pid ?? null,
      command: this.spec.command,
      args: this.spec.args,
      cwd: this.spec.cwd,
      created_at: new Date(this.createdAt).toISOString(),
      last_active_at: new Date(this.lastActiveAt).toISOString(),
      requests_in_flight: [...this.pending.values()].filter((p) => p.kind === "client").length,
      session_open: this.session !== undefined && !this.session.closed,
      server: {
        name: typeof serverInfo.name === "string" ? serverInfo.name : null,
        version: typeof serverInfo.version === "string" ? serverInfo.version : null,
        protocol_version: typeof this.initResult?.protocolVersion === "string" ? this.initResult.protocolVersion : null,
      },
      tool_count: this.tools.length,
      ended:
        this.ended === undefined
          ? null
          : { at: new Date(this.ended.at).toISOString(), reason: this.ended.reason.kind, message: this.endMessage(), exit: exit === undefined ? null : exitJson(exit) },
    };
  }

  serverInfo(): { name: string | null; version: string | null; protocol_version: string | null } {
    return this.info().server;
  }
}
