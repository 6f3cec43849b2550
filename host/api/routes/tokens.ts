// Bot tokens (admin only): create (the secret is returned once), list, revoke.
import { Type } from "@sinclair/typebox";
import type { TokenRow } from "../../store/tokens.js";
import type { ApiApp, RouteContext } from "../server.js";
import { ErrorResponse } from "../schemas.js";
import { BOT_ID_PATTERN } from "../../workspace/botid.js";

const TokenView = Type.Object({
  id: Type.String(),
  kind: Type.String(),
  bot_id: Type.Union([Type.String(), Type.Null()]),
  name: Type.String(),
  created_at: Type.String(),
  expires_at: Type.Union([Type.String(), Type.Null()]),
  revoked_at: Type.Union([Type.String(), Type.Null()]),
  last_used_at: Type.Union([Type.String(), Type.Null()]),
});

const iso = (d: Date | undefined) => (d ? d.toISOString() : null);
function tokenView(t: TokenRow) {
  return { id: t.id, kind: t.kind, bot_id: t.botId ?? null, name: t.name, created_at: t.createdAt.toISOString(), expires_at: iso(t.expiresAt), revoked_at: iso(t.revokedAt), last_used_at: iso(t.lastUsedAt) };
}

export function registerTokenRoutes(app: ApiApp, ctx: RouteContext): void {
  app.post(
    "/tokens",
    {
      config: { access: "admin" },
      schema: {
        summary: "Create a bot token (its secret is shown once)",
        body: Type.Object(
          {
            bot_id: Type.String({ pattern: BOT_ID_PATTERN.source }),
            name: Type.Optional(Type.String({ maxLength: 200 })),
            expires_in_s: Type.Optional(Type.Integer({ minimum: 1, maximum: 10 * 365 * 24 * 3600 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ token: Type.String(), info: TokenView }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const created = await ctx.auth.createBotToken(req.body.bot_id, {
        ...(req.body.name !== undefined ? { name: req.body.name } : {}),
        ...(req.body.expires_in_s !== undefined ? { expiresInS: req.body.expires_in_s } : {}),
      });
      return { token: created.token, info: tokenView(created.row) };
    },
  );

  app.get(
    "/tokens",
    {
      config: { access: "admin" },
      schema: {
        summary: "Every token (never their secrets)",
        querystring: Type.Object({ bot_id: Type.Optional(Type.String({ pattern: BOT_ID_PATTERN.source })) }, { additionalProperties: false }),
        response: { 200: Type.Object({ tokens: Type.Array(TokenView) }) },
      },
    },
    async (req) => ({ tokens: (await ctx.auth.list(req.query.bot_id !== undefined ? { botId: req.query.bot_id } : {})).map(tokenView) }),
  );

  app.delete(
    "/tokens/:id",
    {
      config: { access: "admin" },
      schema: { summary: "Revoke a token", params: Type.Object({ id: Type.String({ pattern: "^[a-z0-9]{12}$" }) }), response: { 200: Type.Object({ revoked: Type.Boolean() }), "4xx": ErrorResponse } },
    },
    async (req) => {
      await ctx.auth.revoke(req.params.id);
      return { revoked: true };
    },
  );
}
