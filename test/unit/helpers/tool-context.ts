// A tool's context for calling a tool module directly against a bridge client, without
// the MCP transport: errors come back as the tool throws them (ToolError for the model).
import type { BridgeClient } from "../../../host/bridge/client.js";
import type { ToolContext } from "../../../host/tools/tool.js";

export function toolContext(client: BridgeClient, signal = new AbortController().signal): ToolContext {
  return {
    botId: "b1",
    workspaces: { call: (_bot, fn) => fn(client) },
    signal,
    progress: async () => {},
    call: (fn) => fn(client),
  };
}

/** The text of a tool result's first content block. */
export function resultText(r: { content: Array<{ type: string; text?: string }> }): string {
  return r.content[0]?.type === "text" ? (r.content[0].text ?? "") : "";
}
