// Bounds of the MCP stdio proxy. Each one caps memory or time a client or a
// server could otherwise take without end.
import { MAX_MESSAGE_BYTES } from "../../../proto/constants.js";

/** Largest JSON-RPC message either way: what fits one bridge message with room for framing (the agent's own line limit). */
export const MAX_JSONRPC_BYTES = MAX_MESSAGE_BYTES - 64 * 1024;
/** Largest HTTP body on the MCP endpoint (a message or a batch of them). */
export const MAX_HTTP_BODY_BYTES = MAX_JSONRPC_BYTES;
/** Client requests waiting for the server's answer, per connection. */
export const MAX_PENDING_REQUESTS = 256;
/** Bytes of client messages queued toward a server that does not read its stdin; beyond, requests are refused. */
export const MAX_QUEUED_INPUT_BYTES = 32 * 1024 * 1024;
/** Live connections per bot (servers running in one workspace). */
export const MAX_CONNECTIONS_PER_BOT = 16;
/** Ended connections remembered per bot, so a client learns why (exit code, stderr). */
export const MAX_ENDED_PER_BOT = 16;
/** How long an ended connection is remembered. */
export const ENDED_KEEP_MS = 10 * 60_000;
/** Default bound on start: spawn, initialize and tools/list together. */
export const DEFAULT_PROBE_TIMEOUT_MS = 30_000;
/** Longest start bound a caller may ask for. */
export const MAX_PROBE_TIMEOUT_MS = 300_000;
/** tools/list pages followed at most during the probe. */
export const MAX_TOOL_PAGES = 50;
/** After stdin is closed (DELETE, failed probe): how long the server may take to exit before its group is killed. */
export const EXIT_GRACE_MS = 2_000;
/** Default idle time after which a connection is closed. */
export const DEFAULT_IDLE_MS = 600_000;
/** stderr lines and line length kept from an exit report (the agent's own bounds; its reply is untrusted). */
export const STDERR_TAIL_LINES = 50;
export const STDERR_LINE_CHARS = 4200;
/** stderr lines quoted in an error message (all of them are in error.data). */
export const STDERR_LINES_IN_MESSAGE = 20;
