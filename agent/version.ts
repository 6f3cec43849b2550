import pkg from "../package.json" with { type: "json" };

export const AGENT_VERSION: string = pkg.version;
export { PROTOCOL_VERSION } from "../proto/constants.js";
export const CAPABILITIES = ["fs", "raw", "read-raw-handoff", "read-tree", "exec", "pty", "mcp-stdio", "jobs", "search", "health", "reflection"] as const;
