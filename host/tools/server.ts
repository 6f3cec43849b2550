// The MCP server of one bot's tool gateway: its tools, its skills as prompts and its
// /data files as resources. One instance serves one 2026-07-28 request, or one
// 2025-line session; the tools themselves keep no state, everything lives in the
// workspace.
import {
  McpServer,
  ProtocolError,
  ProtocolErrorCode,
  ResourceNotFoundError,
  ResourceTemplate,
  type CallToolResult,
  type ServerContext,
} from "@modelcontextprotocol/server";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { applyPatchTool } from "./apply-patch.js";
import { editTool } from "./edit.js";
import { execTool } from "./exec.js";
import { getBackgroundStatusTool, killBackgroundTool, listBackgroundTool, waitUntilTool } from "./jobs.js";
import { globTool, grepTool } from "./search.js";
import { listTool } from "./list.js";
import { readTool } from "./read.js";
import { withCachedJsonSchema } from "./schema-cache.js";
import { DATA_RESOURCE_TEMPLATE, dataPathOf, listDataResources, readDataResource } from "./resources.js";
import { listSkills, listSkillsTool, loadSkill, skillText, useSkillTool } from "./skills.js";
import { isNotFound } from "./text-file.js";
import { errorResult, fromOlderAgent, ToolError, type ToolContext, type ToolDefinition, type WorkspaceCaller } from "./tool.js";
import { writeTool } from "./write.js";

export const SERVER_NAME = "memoh-workspace-tools";
export const SERVER_VERSION = "1.0.0";

/** How a tool call ended, for metrics: a result, an `isError` result, or an exception. */
export type ToolOutcome = "ok" | "error";

export interface ToolServerDeps {
  workspaces: WorkspaceCaller;
  /** Every tool call's duration and outcome. */
  onToolCall?: (tool: string, seconds: number, outcome: ToolOutcome) => void;
  /** Unexpected failures (internal errors) are logged here; the model sees a short message. */
  log?: (msg: string, data: Record<string, unknown>) => void;
  /** Extra tools, after the base ones. */
  extraTools?: ToolDefinition[];
}

export const BASE_TOOLS: ToolDefinition[] = [
  readTool,
  writeTool,
  listTool,
  editTool,
  applyPatchTool,
  grepTool,
  globTool,
  execTool,
  listBackgroundTool,
  getBackgroundStatusTool,
  killBackgroundTool,
  waitUntilTool,
  listSkillsTool,
  useSkillTool,
] as ToolDefinition[];

const INSTRUCTIONS =
  "Tools to work in this bot's workspace, a Linux container: files under /data persist. Relative paths are relative to /data. " +
  "Read before you edit; edit and apply_patch change files atomically and keep their line endings. grep and glob search files. " +
  "exec runs commands; long ones continue as background jobs (list_background, get_background_status, wait_until, kill_background). Skills (list_skills, use_skill) are instructions installed in the workspace.";

/** What the model reads for an error out of a tool. */
export function toolErrorMessage(err: unknown): { message: string; internal: boolean } {
  if (err instanceof ToolError) return { message: err.message, internal: false };
  if (fromOlderAgent(err)) {
    return { message: "the workspace's agent is older than this tool (it does not serve the call the tool needs); restart the workspace so that its agent runs the current runtime bundle", internal: false };
  }
  if (err instanceof WorkspaceError) {
    if (err.code === "internal") return { message: "the workspace failed with an internal error (see the orchestrator's log)", internal: true };
    if (err.code === "cancelled") return { message: "the call was cancelled", internal: false };
    return { message: err.message, internal: false };
  }
  return { message: "internal error in the tool gateway (see the orchestrator's log)", internal: true };
}

function contextOf(botId: string, deps: ToolServerDeps, ctx: ServerContext): ToolContext {
  const token = ctx.mcpReq._meta?.progressToken;
  // MCP requires progress to increase with every notification; a value not above the
  // last one (two once-a-second ticks that land in the same whole second) is not sent.
  let lastProgress = -Infinity;
  return {
    botId,
    workspaces: deps.workspaces,
    signal: ctx.mcpReq.signal,
    call: (fn) => deps.workspaces.call(botId, fn, { signal: ctx.mcpReq.signal }),
    async progress(progress, total, message) {
      if (token === undefined || ctx.mcpReq.signal.aborted || !(progress > lastProgress)) return;
      lastProgress = progress;
      await ctx.mcpReq
        .notify({ method: "notifications/progress", params: { progressToken: token, progress, ...(total !== undefined ? { total } : {}), ...(message !== undefined ? { message } : {}) } })
        .catch(() => undefined);
    },
  };
}

function registerTool(server: McpServer, botId: string, deps: ToolServerDeps, def: ToolDefinition): void {
  server.registerTool(
    def.name,
    { title: def.title, description: def.description, inputSchema: withCachedJsonSchema(def.inputSchema), ...(def.annotations ? { annotations: def.annotations } : {}) },
    async (args: unknown, ctx: ServerContext): Promise<CallToolResult> => {
      const t0 = performance.now();
      let result: CallToolResult;
      try {
        result = await def.run(args as never, contextOf(botId, deps, ctx));
      } catch (err) {
        const { message, internal } = toolErrorMessage(err);
        if (internal) deps.log?.("tool failed", { bot: botId, tool: def.name, err: describeError(err) });
        result = errorResult(message);
      }
      deps.onToolCall?.(def.name, (performance.now() - t0) / 1000, result.isError === true ? "error" : "ok");
      return result;
    },
  );
}

export function createToolServer(botId: string, deps: ToolServerDeps): McpServer {
  const server = new McpServer({ name: SERVER_NAME, version: SERVER_VERSION }, { instructions: INSTRUCTIONS, capabilities: { prompts: {}, logging: {} } });
  for (const def of [...BASE_TOOLS, ...(deps.extraTools ?? [])]) registerTool(server, botId, deps, def);

  // Skills change while a session lasts: prompts are listed from the workspace on each request.
  server.server.setRequestHandler("prompts/list", async (_req, ctx) => {
    const skills = await deps.workspaces.call(botId, (c) => listSkills(c), { signal: ctx.mcpReq.signal });
    return { prompts: skills.filter((s) => s.problem === null).map((s) => ({ name: s.name, description: s.description })) };
  });
  server.server.setRequestHandler("prompts/get", async (req, ctx) => {
    const loaded = await deps.workspaces.call(botId, (c) => loadSkill(c, req.params.name), { signal: ctx.mcpReq.signal });
    if (loaded === undefined) throw new ProtocolError(ProtocolErrorCode.InvalidParams, `no skill ${JSON.stringify(req.params.name)} (prompts are the workspace's skills; see prompts/list)`);
    return { description: loaded.skill.description, messages: [{ role: "user", content: { type: "text", text: skillText(loaded.skill, loaded.skillMd) } }] };
  });

  server.registerResource(
    "data-file",
    new ResourceTemplate(DATA_RESOURCE_TEMPLATE, {
      list: async (ctx) => ({ resources: await deps.workspaces.call(botId, (c) => listDataResources(c), { signal: ctx.mcpReq.signal }).catch(() => []) }),
    }),
    { title: "A file under /data", description: "A file of the workspace's /data, by its path below /data" },
    async (uri, variables, ctx) => {
      let rel: string;
      try {
        rel = dataPathOf(variables.path);
      } catch (err) {
        throw new ProtocolError(ProtocolErrorCode.InvalidParams, err instanceof Error ? err.message : String(err));
      }
      try {
        return { contents: [await deps.workspaces.call(botId, (c) => readDataResource(c, uri.href, rel, ctx.mcpReq.signal), { signal: ctx.mcpReq.signal })] };
      } catch (err) {
        if (isNotFound(err) || (err instanceof ToolError && err.message.endsWith("does not exist"))) throw new ResourceNotFoundError(uri.href, `/data/${rel} does not exist`);
        if (err instanceof ToolError) throw new ProtocolError(ProtocolErrorCode.InvalidParams, err.message);
        throw new ProtocolError(ProtocolErrorCode.InternalError, toolErrorMessage(err).message);
      }
    },
  );
  return server;
}
