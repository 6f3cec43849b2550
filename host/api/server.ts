// The HTTP API: Fastify 5 with TypeBox route schemas (one schema gives validation,
// TypeScript types and the OpenAPI document), pino request logs, prom-client metrics.
// Every route but /healthz and /readyz needs a bearer token (auth.ts); every error is
// `{"error":{"code","message"}}` (errors.ts). Route families live in routes/.
import Fastify, { LogController, type FastifyInstance, type FastifyRequest } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import multipart from "@fastify/multipart";
import swagger from "@fastify/swagger";
import websocket from "@fastify/websocket";
import type { WorkspaceManager } from "../workspace/manager.js";
import { ApiAuth, requireAdmin, requireBot, type Principal } from "./auth.js";
import { ApiError, errorBody, toApiError } from "./errors.js";
import type { ApiMetrics } from "./metrics.js";
import { registerOpsRoutes, type ReadinessCheck } from "./routes/ops.js";
import { registerLifecycleRoutes } from "./routes/lifecycle.js";
import { registerFileRoutes } from "./routes/files.js";
import { registerExecRoutes } from "./routes/exec.js";
import { registerSkillRoutes } from "./routes/skills.js";
import { registerTokenRoutes } from "./routes/tokens.js";
import { registerToolRoutes, type ToolRouteOptions } from "./routes/tools.js";
import { registerMcpStdioRoutes } from "./routes/mcp-stdio.js";
import { registerDataRoutes } from "./routes/data.js";

/** Who may call a route: anybody, any valid token, the admin token, or a token of the bot in the path (or admin). */
export type RouteAccess = "public" | "token" | "admin" | "bot";

declare module "fastify" {
  interface FastifyContextConfig {
    access?: RouteAccess;
  }
  interface FastifyRequest {
    principal: Principal | undefined;
  }
}

export interface ApiOptions {
  manager: WorkspaceManager;
  auth: ApiAuth;
  metrics: ApiMetrics;
  readiness: ReadinessCheck;
  /** The snapshotter workspaces use (a create may name it, not another). */
  snapshotter: string;
  /** Largest upload (default 4 GiB). */
  uploadMaxBytes?: number;
  /** A streaming client that neither reads nor writes for this long is cut off (default 5 min). */
  streamIdleMs?: number;
  /** An MCP stdio connection whose client sent nothing for this long is closed (default 10 min). */
  mcpStdioIdleMs?: number;
  /** pino options, or false (tests). */
  logger?: boolean | Record<string, unknown>;
  /** The MCP tool gateway's settings (session idle time, allowed host names). */
  tools?: ToolRouteOptions;
}

export type Api = FastifyInstance;

const TERMINAL_PATH = "/bots/{bot_id}/container/terminal";
const TERMINAL_OPERATION = {
  get: {
    summary: "A terminal: upgrade to a WebSocket bridged to a shell on a pseudo-terminal",
    description:
      "Binary frames carry the terminal's bytes both ways; a text frame {\"resize\":{\"cols\":N,\"rows\":N}} resizes it. The socket closes with code 4000 + the exit code (reason {\"exit_code\":N}). The token may also be given as a `bearer.<token>` Sec-WebSocket-Protocol entry beside `memoh.terminal`.",
    parameters: [
      { name: "bot_id", in: "path", required: true, schema: { type: "string" } },
      { name: "cols", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000, default: 80 } },
      { name: "rows", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000, default: 24 } },
      { name: "command", in: "query", schema: { type: "string" } },
    ],
    responses: { "101": { description: "Switching Protocols: the terminal session" }, "401": { description: "no or bad token" }, "403": { description: "another bot's token" } },
  },
};

/** JSON bodies are small; file writes have their own larger limit. */
export const JSON_BODY_LIMIT = 1024 * 1024;
export const FS_WRITE_BODY_LIMIT = 24 * 1024 * 1024;
export const FS_WRITE_MAX_BYTES = 16 * 1024 * 1024;

export async function buildApiServer(opts: ApiOptions) {
  const app = Fastify({
    logger: opts.logger ?? { level: "info" },
    bodyLimit: JSON_BODY_LIMIT,
    requestIdHeader: "x-request-id",
    // Fastify's own two lines per request are replaced by one (the onResponse hook below).
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: "array", useDefaults: true, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorateRequest("principal", undefined);

  // One JSON line per request: id, route, status, duration.
  app.addHook("onResponse", async (req, reply) => {
    const route = req.routeOptions.url ?? "(no route)";
    const seconds = reply.elapsedTime / 1000;
    opts.metrics.observeRequest(req.method, route, reply.statusCode, seconds);
    req.log.info({ reqId: req.id, method: req.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, "request");
  });

  app.setErrorHandler((err, req, reply) => {
    const apiErr = toApiError(err);
    if (apiErr.code === "internal") req.log.error({ err }, "internal error");
    else req.log.info({ code: apiErr.code, message: apiErr.message }, "request failed");
    if (reply.sent || reply.raw.headersSent) return;
    void reply.code(apiErr.status).send(errorBody(apiErr));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.code(404).send(errorBody(new ApiError("not_found", `no route ${req.method} ${req.url.split("?")[0]}`)));
  });

  // Authentication first, before the body is read: a caller without a token can make
  // the server neither buffer a body nor learn anything about the schemas.
  app.addHook("onRequest", async (req) => {
    const access = req.routeOptions.config.access ?? "admin";
    if (access === "public") return;
    req.principal = await opts.auth.authenticate(headerToken(req));
    if (access === "admin") requireAdmin(req.principal);
    else if (access === "bot") {
      const botId = (req.params as { bot_id?: unknown }).bot_id;
      if (typeof botId !== "string") throw new ApiError("internal", "a bot route without :bot_id");
      requireBot(req.principal, botId);
    }
  });
  // A POST without a body validates as an empty object (`POST …/start`).
  app.addHook("preValidation", async (req) => {
    if (req.body === undefined && req.headers["content-type"] === undefined && req.method !== "GET" && req.method !== "DELETE") req.body = {};
  });

  // ajv (8.20) coerces the strings "Infinity" and "1e999" to Infinity and then checks no
  // minimum or maximum on a number that is not finite, so `?offset=Infinity` or
  // `{"timeout_s": "1e999"}` passed validation and failed deep inside (a database or
  // protobuf error, a 500). No route takes such a number: every validated part is
  // checked here, after validation, for all routes at once.
  app.addHook("preHandler", (req, _reply, done) => {
    const schema = req.routeOptions.schema;
    if (schema === undefined) return done();
    const parts: Array<[string, unknown, unknown]> = [["params", schema.params, req.params], ["querystring", schema.querystring, req.query], ["body", schema.body, req.body]];
    for (const [part, partSchema, value] of parts) {
      const at = partSchema === undefined ? undefined : nonFinitePath(value);
      if (at !== undefined) return done(new ApiError("invalid_argument", `${part}${at} must be a finite number`));
    }
    done();
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: "memoh-workspace", version: "1", description: "Workspace containers for AI bots: lifecycle, files, exec, terminal, skills, tokens." },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
      security: [{ bearer: [] }],
    },
    // @fastify/websocket hides its routes from the document: describe the terminal here.
    transformObject: (documentObject) => {
      if (!("openapiObject" in documentObject)) return documentObject.swaggerObject;
      const doc = documentObject.openapiObject as { paths?: Record<string, unknown> };
      doc.paths = { ...doc.paths, [TERMINAL_PATH]: TERMINAL_OPERATION };
      return documentObject.openapiObject;
    },
  });
  await app.register(multipart, { limits: { fileSize: opts.uploadMaxBytes ?? 4 * 1024 ** 3, files: 1, fields: 10, fieldSize: 64 * 1024, parts: 12 } });
  await app.register(websocket, {
    options: {
      maxPayload: 1024 * 1024,
      // The token may come as a subprotocol (browsers cannot set headers); answer with ours.
      handleProtocols: (protocols: Set<string>) => (protocols.has("memoh.terminal") ? "memoh.terminal" : false),
    },
  });

  const ctx = { ...opts, streamIdleMs: opts.streamIdleMs ?? 300_000 };
  registerOpsRoutes(app, ctx);
  registerLifecycleRoutes(app, ctx);
  registerFileRoutes(app, ctx);
  registerExecRoutes(app, ctx);
  registerSkillRoutes(app, ctx);
  registerTokenRoutes(app, ctx);
  registerToolRoutes(app, ctx);
  registerMcpStdioRoutes(app, ctx);
  registerDataRoutes(app, ctx);
  return app;
}

export type ApiApp = Awaited<ReturnType<typeof buildApiServer>>;
export type RouteContext = ApiOptions & { streamIdleMs: number };

/** The bearer token: the Authorization header, or for WebSocket upgrades a `bearer.<token>` subprotocol entry. */
function headerToken(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth !== undefined) return auth;
  const protocols = req.headers["sec-websocket-protocol"];
  if (typeof protocols === "string") {
    for (const p of protocols.split(",").map((s) => s.trim())) if (p.startsWith("bearer.")) return `Bearer ${p.slice("bearer.".length)}`;
  }
  return undefined;
}

/**
 * Where (`/a/0/b`) a validated input holds a number that is not finite, if anywhere.
 * Walks objects (a parsed query string has its own prototype) and arrays, never the
 * bytes of a Buffer or a stream, without recursion.
 */
export function nonFinitePath(value: unknown): string | undefined {
  const stack: Array<[unknown, string]> = [[value, ""]];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [v, at] = next;
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return at;
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${at}/${i}`]);
    } else if (typeof v === "object" && v !== null) {
      if (ArrayBuffer.isView(v) || typeof (v as { pipe?: unknown }).pipe === "function") continue;
      for (const [k, x] of Object.entries(v)) stack.push([x, `${at}/${k}`]);
    }
  }
  return undefined;
}
