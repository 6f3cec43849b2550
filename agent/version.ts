import pkg from "../package.json" with { type: "json" };

export const AGENT_VERSION: string = pkg.version;
/** Bumped when ContainerService changes incompatibly; the host checks it. */
export const PROTOCOL_VERSION = 1;
export const CAPABILITIES = ["fs", "raw", "exec", "pty", "mcp-stdio", "health", "reflection"] as const;
