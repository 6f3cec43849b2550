// TypeBox schemas shared by the route families.
import { Type } from "@sinclair/typebox";
import { BOT_ID_PATTERN } from "../workspace/botid.js";

export const BotParams = Type.Object({ bot_id: Type.String({ pattern: BOT_ID_PATTERN.source, description: "1–64 of [a-z0-9_-], starting with a letter or digit" }) });

export const Paging = Type.Object({
  offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000, default: 0 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
});

export const ErrorResponse = Type.Object({ error: Type.Object({ code: Type.String(), message: Type.String() }) });

/** A path inside the workspace: no NUL, bounded. Relative paths resolve against /data. */
export const WorkspacePath = Type.String({ minLength: 1, maxLength: 4096, pattern: "^[^\\u0000]*$" });
