// Limits the agent enforces so that no request can make it walk, read or buffer without bound.
export const MiB = 1024 * 1024;

/** gRPC message limit, both directions. */
export const MAX_MESSAGE_BYTES = 16 * MiB;
/** ReadFile refuses larger files and points the caller to ReadRaw. */
export const READ_FILE_MAX_BYTES = 8 * MiB;
/** Lines ReadFile returns when the request sets no limit. */
export const READ_FILE_DEFAULT_LINES = 2000;
/** Bytes a file is sniffed for NUL to call it binary. */
export const BINARY_SNIFF_BYTES = 8192;
/** ReadRaw chunk size. */
export const RAW_CHUNK_BYTES = 64 * 1024;
/** Entries ListDir returns when the request sets no limit. */
export const LIST_DEFAULT_LIMIT = 1000;
/** Largest page ListDir returns. */
export const LIST_MAX_LIMIT = 10_000;
/** Entries a ListDir walk may visit before it answers RESOURCE_EXHAUSTED. */
export const LIST_WALK_CAP = 100_000;
/** Stderr lines kept for an MCP server's exit report. */
export const MCP_STDERR_TAIL_LINES = 50;
/** Longest path accepted. */
export const MAX_PATH_LENGTH = 4096;
