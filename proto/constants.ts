// Numbers both ends of the bridge protocol must agree on: the agent (agent/),
// the host (host/) and the runtime bundle's contract (scripts/build-runtime.ts)
// import them from here.

export const MiB = 1024 * 1024;

/** The gRPC message limit of both ends of every connection we open, both directions. */
export const MAX_MESSAGE_BYTES = 16 * MiB;

/**
 * Bumped when ContainerService changes incompatibly. The agent reports it in
 * Info, the runtime bundle records it in workspace-contract.json, and the host
 * refuses an agent whose number differs from the bundle's.
 */
export const PROTOCOL_VERSION = 1;

/** The agent's TCP port inside legacy `mcp-<bot>` containers (BRIDGE_TCP_ADDR=0.0.0.0:9090). */
export const LEGACY_BRIDGE_PORT = 9090;
