// Bot ids become paths (<dataRoot>/run/<bot>) and container ids (workspace-<bot>),
// so they are checked once, at the edge, before either is built.
//
// The rule: 1–64 characters; lowercase ASCII letters, digits, '_' and '-';
// the first character a letter or a digit. So no '/', no '.', no NUL, no
// uppercase, nothing a shell, a path or containerd's id rules would treat specially
// (containerd ids allow [A-Za-z0-9_.-]; "workspace-" + 64 chars stays well within 76).

import { WorkspaceError } from "./errors.js";

export const BOT_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
export const BOT_ID_MAX_LENGTH = 64;

export class InvalidBotIdError extends WorkspaceError {
  constructor(readonly botId: string, problem: string) {
    super("invalid_argument", `invalid bot id ${JSON.stringify(botId.length > 80 ? `${botId.slice(0, 80)}…` : botId)}: ${problem}`);
    this.name = "InvalidBotIdError";
  }
}

/** Why `botId` is not a valid bot id, or undefined when it is. */
export function botIdProblem(botId: unknown): string | undefined {
  if (typeof botId !== "string") return "not a string";
  if (botId.length === 0) return "empty";
  if (botId.length > BOT_ID_MAX_LENGTH) return `longer than ${BOT_ID_MAX_LENGTH} characters (${botId.length})`;
  if (botId.includes("\0")) return "contains NUL";
  if (!BOT_ID_PATTERN.test(botId)) return "must be lowercase letters, digits, '_' or '-', starting with a letter or digit";
  return undefined;
}

/** Throws InvalidBotIdError unless `botId` follows the rule above; returns it typed as a string. */
export function validateBotId(botId: unknown): string {
  const problem = botIdProblem(botId);
  if (problem !== undefined) throw new InvalidBotIdError(typeof botId === "string" ? botId : String(botId), problem);
  return botId as string;
}

export const WORKSPACE_PREFIX = "workspace-";
export const LEGACY_PREFIX = "mcp-";

/** The container id of a bot's (current-generation) workspace. */
export function workspaceContainerId(botId: string): string {
  return WORKSPACE_PREFIX + validateBotId(botId);
}

/** The container id a legacy (TCP bridge) workspace of the bot had. */
export function legacyContainerId(botId: string): string {
  return LEGACY_PREFIX + validateBotId(botId);
}

export function isLegacyContainerId(containerId: string): boolean {
  return containerId.startsWith(LEGACY_PREFIX);
}
