// Limits the agent enforces so that no request can make it walk, read or buffer without bound.
import { MAX_MESSAGE_BYTES, MiB } from "../proto/constants.js";

export { MAX_MESSAGE_BYTES, MiB };
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
/** Entries a recursive ListDir walk may visit before it answers RESOURCE_EXHAUSTED. */
export const LIST_WALK_CAP = 100_000;
/** A directory listed without recursive is sorted up to this many entries; a larger one is paged in directory order. */
export const LIST_SORT_MAX_ENTRIES = 20_000;
/** Encoded entries in one ListDir page, at most: the page then fits a message whatever the names. */
export const LIST_PAGE_MAX_BYTES = 8 * MiB;
/** Stderr lines kept for an MCP server's exit report. */
export const MCP_STDERR_TAIL_LINES = 50;
/** Longest request path accepted, in bytes as sent (UTF-8 text or raw bytes). */
export const MAX_PATH_LENGTH = 4096;
/**
 * After a spawned process exits, how long its stdout/stderr may stay open and idle
 * (held by a background process it left behind) before the agent stops reading
 * them and reports the exit anyway.
 */
export const EXEC_STDIO_GRACE_MS = 1000;
/** Largest PTY dimension (struct winsize holds unsigned shorts). */
export const PTY_MAX_DIMENSION = 65535;
/** Longest stderr line kept in an MCP server's tail; the rest of the line is cut. */
export const MCP_STDERR_LINE_BYTES = 4096;
/** Longest stdout line of an MCP server forwarded as one message (room left for framing). */
export const MCP_MAX_LINE_BYTES = MAX_MESSAGE_BYTES - 64 * 1024;
/** WriteRaw gives up on a client that sent nothing for this long. */
export const WRITE_IDLE_MS = 60_000;
/**
 * Stdin an Exec holds for its process (received, not yet taken by the process)
 * before the agent stops reading the call's request stream, on pipes and on a
 * pty alike. Signal, resize and close_stdin sent behind up to this much unread
 * stdin take effect at once; behind more, they wait until the process reads.
 * At most one request message (up to 16 MiB) more is held while paused.
 */
export const EXEC_STDIN_BUFFER_BYTES = 4 * MiB;
/** First wait before a pty whose input is full is written to again; doubles up to the max. */
export const PTY_STDIN_RETRY_MIN_MS = 2;
export const PTY_STDIN_RETRY_MAX_MS = 50;
/** ReadTree: levels below the request path it descends at most (and the default). */
export const TREE_MAX_DEPTH = 256;
/** ReadTree: entries (and skipped records) one call sends at most (and the default). */
export const TREE_MAX_ENTRIES = 1_000_000;
/** ReadTree: bytes of file data in a data message. */
export const TREE_CHUNK_BYTES = 256 * 1024;
/** ReadTree: bytes written to the call and not yet handed to the transport, at most (then it waits). */
export const TREE_INFLIGHT_BYTES = 2 * MiB;
/** ReadTree: bytes of a file read ahead (at open) and bytes per read after that. */
export const TREE_READ_BLOCK_BYTES = 256 * 1024;
