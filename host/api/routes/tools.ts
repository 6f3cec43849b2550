// The MCP tool gateway at /bots/:bot_id/tools (host/tools/): POST, GET and DELETE are
// Streamable HTTP. Fastify authenticates (a bot token reaches only its own bot's
// gateway) and hands the request on untouched: the body is kept as bytes (this scope
// has its own content-type parser), parsed once here, and the SDK answers.
import { Type } from "@sinclair/typebox";
import { GATEWAY_BODY_LIMIT, ToolGateway } from "../../tools/gateway.js";
import { sendWebResponse, toWebRequest } from "../../tools/http.js";
import { ApiError } from "../errors.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams } from "../schemas.js";

export interface ToolRouteOptions {
  /** A 2025-line session without requests for this long is closed. */
  sessionIdleMs?: number;
  /** Host names allowed besides loopback names and IP literals. */
  allowedHostnames?: string[];
}

function parseJson(body: Buffer | undefined): unknown {
  if (body === undefined || body.length === 0) return undefined;
  try {
    return JSON.parse(body.toString("utf8")) as unknown;
  } catch {
    // The SDK reads the body itself and answers with a parse error.
    return undefined;
  }
}

export function registerToolRoutes(app: ApiApp, ctx: RouteContext): void {
  const gateway = new ToolGateway({
    workspaces: ctx.manager,
    onToolCall: (tool, seconds, outcome) => ctx.metrics.observeToolCall(tool, seconds, outcome),
    log: (msg, data) => app.log.error(data, msg),
    logRefused: (msg, data) => app.log.info(data, msg),
    ...(ctx.tools?.sessionIdleMs !== undefined ? { sessionIdleMs: ctx.tools.sessionIdleMs } : {}),
    ...(ctx.tools?.allowedHostnames !== undefined ? { allowedHostnames: ctx.tools.allowedHostnames } : {}),
  });
  app.addHook("onClose", async () => gateway.close());

  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser("*", { parseAs: "buffer", bodyLimit: GATEWAY_BODY_LIMIT }, (_req, body, done) => done(null, body));
    scope.route({
      method: ["POST", "GET", "DELETE"],
      url: "/bots/:bot_id/tools",
      config: { access: "bot" },
      schema: {
        summary: "The bot's MCP tool gateway (Streamable HTTP; protocol 2026-07-28 and the 2025 line with sessions)",
        params: BotParams,
        response: { "4xx": Type.Unknown(), "5xx": Type.Unknown() },
      },
      handler: async (req, reply) => {
        const principal = req.principal;
        if (principal === undefined) throw new ApiError("unauthenticated", "missing bearer token");
        const botId = (req.params as { bot_id: string }).bot_id;
        const body = Buffer.isBuffer(req.body) ? req.body : undefined;
        const gone = new AbortController();
        reply.raw.on("close", () => {
          if (!reply.raw.writableFinished) gone.abort();
        });
        const parsed = parseJson(body);
        // A body that parsed reaches the SDK as parsedBody and is not read again: the
        // web Request then goes without it (no stream made for bytes nobody reads).
        // One that did not parse goes along, for the SDK's parse-error answer.
        const request = toWebRequest(req.raw, parsed === undefined ? body : undefined, gone.signal);
        const response = await gateway.handle(request, { botId, tokenId: principal.tokenId }, parsed);
        reply.hijack();
        await sendWebResponse(reply.raw, response);
      },
    });
  });
}
