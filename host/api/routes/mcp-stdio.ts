// MCP stdio servers in a workspace, offered over HTTP: start one (the agent's
// McpStdio, probed with initialize + tools/list), list them, end one; and each
// connection's Streamable HTTP MCP endpoint, which relays JSON-RPC both ways
// (host/tools/stdio/). Same bearer auth as every bot route; the endpoint also checks
// Host and Origin (DNS-rebinding protection).
import { Type } from "@sinclair/typebox";
import type { IncomingHttpHeaders } from "node:http";
import type { FastifyReply } from "fastify";
import { openStdioChannel } from "../../tools/stdio/channel.js";
import { writeJsonRpcError, type StdioConnection } from "../../tools/stdio/connection.js";
import { McpServerStartError, exitJson } from "../../tools/stdio/errors.js";
import { DEFAULT_IDLE_MS, DEFAULT_PROBE_TIMEOUT_MS, MAX_HTTP_BODY_BYTES, MAX_PROBE_TIMEOUT_MS } from "../../tools/stdio/limits.js";
import { hostOrOriginProblem } from "../../tools/origin.js";
import { CONNECTION_ID_PATTERN, McpStdioProxy } from "../../tools/stdio/proxy.js";
import { ApiError, errorBody, toApiError } from "../errors.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams, ErrorResponse, WorkspacePath } from "../schemas.js";

const NoNul = "^[^\\u0000]*$";

const StartBody = Type.Object(
  {
    name: Type.String({ pattern: "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description: "a label for the server: 1–64 of [A-Za-z0-9._-]" }),
    command: Type.String({ minLength: 1, maxLength: 4096, pattern: NoNul, description: "the program, looked up on the workspace's PATH (which ends with /opt/memoh/toolkit/bin: node, npx)" }),
    args: Type.Optional(Type.Array(Type.String({ maxLength: 128 * 1024, pattern: NoNul }), { maxItems: 4096 })),
    env: Type.Optional(Type.Record(Type.String({ pattern: "^[^=\\u0000]+$", maxLength: 1024 }), Type.String({ maxLength: 128 * 1024, pattern: NoNul }))),
    cwd: Type.Optional(WorkspacePath),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: "run as this user (name, uid, name:group…); default root" })),
    timeout_s: Type.Optional(Type.Number({ minimum: 1, maximum: MAX_PROBE_TIMEOUT_MS / 1000, description: `bound on start, initialize and tools/list (default ${DEFAULT_PROBE_TIMEOUT_MS / 1000})` })),
  },
  { additionalProperties: false },
);

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);
const ExitSchema = Type.Object({ code: Type.Integer(), signal: Nullable(Type.String()), stderr_tail: Type.Array(Type.String()) });
const ServerSchema = Type.Object({ name: Nullable(Type.String()), version: Nullable(Type.String()), protocol_version: Nullable(Type.String()) });
const ToolSchema = Type.Record(Type.String(), Type.Unknown(), { description: "a tool as the server listed it (name, description, inputSchema…)" });
const ConnectionSchema = Type.Object({
  connection_id: Type.String(),
  url: Type.String({ description: "the connection's Streamable HTTP MCP endpoint" }),
  name: Type.String(),
  state: Type.Union([Type.Literal("starting"), Type.Literal("ready"), Type.Literal("ended")]),
  pid: Type.Union([Type.Integer(), Type.Null()]),
  command: Type.String(),
  args: Type.Array(Type.String()),
  cwd: Type.String(),
  created_at: Type.String(),
  last_active_at: Type.String(),
  requests_in_flight: Type.Integer(),
  session_open: Type.Boolean(),
  server: ServerSchema,
  tool_count: Type.Integer(),
  ended: Type.Union([
    Type.Object({ at: Type.String(), reason: Type.String(), message: Type.String(), exit: Type.Union([ExitSchema, Type.Null()]) }),
    Type.Null(),
  ]),
});
const StartErrorResponse = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String(), exit: Type.Optional(ExitSchema) }) });
const ConnectionParams = Type.Object({ bot_id: BotParams.properties.bot_id, connection_id: Type.String({ pattern: CONNECTION_ID_PATTERN.source }) });

type ConnectionParamsType = { bot_id: string; connection_id: string };
/** What the helpers below read of a request (every route's typed request has it). */
interface RequestLike {
  headers: IncomingHttpHeaders;
  url: string;
  method: string;
  body: unknown;
  protocol: string;
  host: string;
}

const ENDPOINT_DESCRIPTION =
  "The connection's Streamable HTTP MCP endpoint (protocol revisions 2024-11-05 to 2025-11-25, and whatever the server itself negotiates): POST JSON-RPC messages (initialize first; answers come as JSON or an event stream), GET with `Accept: text/event-stream` for server-initiated messages, DELETE to end the connection and its server. Host and Origin must not be foreign (403).";

export function registerMcpStdioRoutes(app: ApiApp, ctx: RouteContext): void {
  const proxy = new McpStdioProxy({
    open: (botId, spec, handlers) => ctx.manager.call(botId, (client) => openStdioChannel(client, spec, handlers)),
    idleMs: ctx.mcpStdioIdleMs ?? DEFAULT_IDLE_MS,
    log: (message, data) => app.log.info(data ?? {}, message),
  });
  // Servers end before the HTTP server waits for its open event streams.
  app.addHook("preClose", async () => {
    await proxy.close();
  });

  const endpointUrl = (req: RequestLike, botId: string, connectionId: string) => `${req.protocol}://${req.host}/bots/${botId}/mcp-stdio/${connectionId}`;
  const describe = (req: RequestLike, c: StdioConnection) => ({ ...c.info(), url: endpointUrl(req, c.botId, c.id) });

  app.post(
    "/bots/:bot_id/mcp-stdio",
    {
      config: { access: "bot" },
      schema: {
        summary: "Start an MCP server on stdio in the workspace; answers its endpoint and its tools once it answered initialize and tools/list",
        params: BotParams,
        body: StartBody,
        response: {
          200: Type.Object({ connection_id: Type.String(), url: Type.String(), tools: Type.Array(ToolSchema), server: ServerSchema, pid: Type.Integer() }),
          "4xx": StartErrorResponse,
          "5xx": StartErrorResponse,
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const botId = req.params.bot_id;
      let connection: StdioConnection;
      try {
        connection = await proxy.start(botId, {
          name: b.name,
          spec: { command: b.command, args: b.args ?? [], env: b.env ?? {}, cwd: b.cwd ?? "", user: b.user ?? "" },
          probeTimeoutMs: Math.round((b.timeout_s ?? DEFAULT_PROBE_TIMEOUT_MS / 1000) * 1000),
        });
      } catch (err) {
        if (!(err instanceof McpServerStartError) || err.exit === undefined) throw err;
        const e = toApiError(err);
        return reply.code(e.status).send({ error: { code: e.code, message: e.message, exit: exitJson(err.exit) } });
      }
      return { connection_id: connection.id, url: endpointUrl(req, botId, connection.id), tools: connection.tools, server: connection.serverInfo(), pid: connection.pid ?? 0 };
    },
  );

  app.get(
    "/bots/:bot_id/mcp-stdio",
    {
      config: { access: "bot" },
      schema: {
        summary: "The bot's MCP stdio servers (ended ones are listed for a while, with how they ended)",
        params: BotParams,
        response: { 200: Type.Object({ connections: Type.Array(ConnectionSchema) }), "4xx": ErrorResponse },
      },
    },
    async (req) => ({ connections: proxy.list(req.params.bot_id).map((info) => ({ ...info, url: endpointUrl(req, req.params.bot_id, info.connection_id) })) }),
  );

  /** The connection, after the Host/Origin check; undefined when an answer was already sent. */
  const endpointConnection = (req: RequestLike & { params: ConnectionParamsType }, reply: FastifyReply, jsonRpc: boolean): StdioConnection | undefined => {
    const problem = hostOrOriginProblem(req.headers.host ?? null, req.headers.origin ?? null, { allowedHostnames: ctx.tools?.allowedHostnames ?? [] });
    const { bot_id: botId, connection_id: connectionId } = req.params;
    const connection = proxy.get(botId, connectionId);
    const refusal = problem !== undefined ? { status: 403, message: `Forbidden: ${problem}` } : connection === undefined ? { status: 404, message: `bot ${botId} has no MCP stdio connection ${connectionId}` } : undefined;
    if (refusal === undefined) return connection;
    if (jsonRpc) {
      reply.hijack();
      writeJsonRpcError(reply.raw, refusal.status, refusal.message);
    } else {
      void reply.code(refusal.status).send(errorBody(new ApiError(refusal.status === 403 ? "permission_denied" : "not_found", refusal.message)));
    }
    return undefined;
  };

  const relay = async (req: RequestLike, reply: FastifyReply, connection: StdioConnection) => {
    const headers = new Headers();
    for (const name of ["accept", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"]) {
      const value = req.headers[name];
      if (typeof value === "string") headers.set(name, value);
    }
    reply.hijack();
    await connection.serveHttp(new Request(`http://localhost${req.url}`, { method: req.method, headers }), req.body, reply.raw);
  };

  app.post(
    "/bots/:bot_id/mcp-stdio/:connection_id",
    {
      config: { access: "bot" },
      bodyLimit: MAX_HTTP_BODY_BYTES,
      schema: { summary: "MCP endpoint: a JSON-RPC message or batch for the server", description: ENDPOINT_DESCRIPTION, params: ConnectionParams },
    },
    async (req, reply) => {
      const connection = endpointConnection(req, reply, true);
      if (connection !== undefined) await relay(req, reply, connection);
      return reply;
    },
  );

  app.get(
    "/bots/:bot_id/mcp-stdio/:connection_id",
    {
      config: { access: "bot" },
      schema: {
        summary: "MCP endpoint: with `Accept: text/event-stream` the stream of server-initiated messages; otherwise the connection as JSON",
        description: ENDPOINT_DESCRIPTION,
        params: ConnectionParams,
      },
    },
    async (req, reply) => {
      const wantsStream = (req.headers.accept ?? "").includes("text/event-stream");
      const connection = endpointConnection(req, reply, wantsStream);
      if (connection === undefined) return reply;
      if (wantsStream) {
        await relay(req, reply, connection);
        return reply;
      }
      return reply.send(describe(req, connection));
    },
  );

  app.delete(
    "/bots/:bot_id/mcp-stdio/:connection_id",
    {
      config: { access: "bot" },
      schema: {
        summary: "End a connection: its server gets EOF on stdin, then its process group is killed; the MCP session ends with it",
        params: ConnectionParams,
        response: { 200: Type.Object({ ended: ConnectionSchema }), "4xx": ErrorResponse },
      },
    },
    async (req, reply) => {
      const connection = endpointConnection(req, reply, false);
      if (connection === undefined) return reply;
      const sessionId = req.headers["mcp-session-id"];
      if (typeof sessionId === "string" && connection.isForeignSession(sessionId)) throw new ApiError("not_found", "Session not found: this MCP session has already ended");
      const info = await proxy.end(req.params.bot_id, req.params.connection_id);
      if (info === undefined) throw new ApiError("not_found", `bot ${req.params.bot_id} has no MCP stdio connection ${req.params.connection_id}`);
      return { ended: { ...info, url: endpointUrl(req, req.params.bot_id, info.connection_id) } };
    },
  );
}
