// What every tool is: a name, a description and a zod input schema the SDK turns into
// the JSON Schema of tools/list, and a function of the call's context. A tool reports a
// problem the model can act on by throwing ToolError; every failure, its own or the
// workspace's, reaches the model as an `isError` result, never as a protocol error.
import type { CallToolResult, ToolAnnotations } from "@modelcontextprotocol/server";
import type * as z from "zod";
import type { BridgeClient } from "../bridge/client.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { WorkspaceError } from "../workspace/errors.js";

/** Runs functions of a bot's bridge client: the workspace manager's `call`. */
export interface WorkspaceCaller {
  call<T>(botId: string, fn: (client: BridgeClient) => Promise<T>, opts?: { signal?: AbortSignal }): Promise<T>;
}

export interface ToolContext {
  botId: string;
  workspaces: WorkspaceCaller;
  /** Fires when the client cancels the call or goes away. */
  signal: AbortSignal;
  /** Sends a progress notification when the client asked for them (a progress token); else nothing. */
  progress(progress: number, total?: number, message?: string): Promise<void>;
  /** Runs `fn` with the bot's bridge client. */
  call<T>(fn: (client: BridgeClient) => Promise<T>): Promise<T>;
}

export interface ToolDefinition<S extends z.ZodType = z.ZodType> {
  name: string;
  title: string;
  description: string;
  inputSchema: S;
  annotations?: ToolAnnotations;
  run(args: z.infer<S>, ctx: ToolContext): Promise<CallToolResult>;
}

/**
 * The most a numeric tool argument may be when it reaches the agent: offsets go into
 * protobuf uint32 fields, and a larger value fails to encode (an internal error instead
 * of an answer the model can use).
 */
export const UINT32_MAX = 2 ** 32 - 1;

/** A problem with the call the model can fix: becomes an `isError` result with this message. */
export class ToolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ToolError";
  }
}

export function textResult(text: string): CallToolResult {
  return { content: [{ type: "text", text }] };
}

export function errorResult(text: string): CallToolResult {
  return { content: [{ type: "text", text }], isError: true };
}

/** Keeps the type of a definition's schema while collecting definitions in one list. */
export function defineTool<S extends z.ZodType>(def: ToolDefinition<S>): ToolDefinition<S> {
  return def;
}

/** The agent does not know the RPC (UNIMPLEMENTED): it runs an older bundle than the host. */
export function fromOlderAgent(err: unknown): boolean {
  return rpcCode(err) === Status.UNIMPLEMENTED || (err instanceof WorkspaceError && rpcCode(err.cause) === Status.UNIMPLEMENTED);
}

/**
 * The agent refused the request as it was asked (INVALID_ARGUMENT, NOT_FOUND): its
 * message is for the model, as a ToolError. Anything else is rethrown as it is.
 */
export function refusedInput(err: unknown): never {
  const refused = err instanceof WorkspaceError ? err.code === "invalid_argument" || err.code === "not_found" : rpcCode(err) === Status.INVALID_ARGUMENT || rpcCode(err) === Status.NOT_FOUND;
  if (refused) throw new ToolError((err as Error).message);
  throw err;
}
