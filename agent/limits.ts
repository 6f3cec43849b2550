// Limits the agent enforces so that no request can make it walk, read or buffer without bound.
import { MAX_MESSAGE_BYTES, MiB } from "../proto/constants.js";

export { MAX_MESSAGE_BYTES, MiB };
/** ReadFile refuses larger files and points the caller to ReadRaw. */
export const READ_FILE_MAX_BYTES = 8 * MiB;
/** Lines ReadFile returns when the request sets no limit. */
export const READ_FILE_DEFAULT_LINES = 2000;
/** Bytes a file is sniffed for NUL to call it binary. */
export const BINARY_SNIFF_BYTES = 8192;
/**
 * ReadRaw chunk size (file bytes in one message). 256 KiB rather than 64 KiB: a
 * quarter of the messages for every process on the path to the client to handle. In
 * alternating `npm run bench -- api` runs (ReadRaw reusing its two blocks) the HTTP
 * download measured 319 and 344 MiB/s against 292 and 264 at 64 KiB, the host's own
 * ReadRaw 599 and 549 against 439 and 402; 1 MiB chunks gained nothing over 256 KiB.
 */
export const RAW_CHUNK_BYTES = 256 * 1024;
/** ReadRaw reads this much per readv(2) (one thread-pool round trip for four chunks). */
export const RAW_READ_BLOCK_BYTES = 1 * MiB;
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
 * The file budget (budget.ts): bytes of ReadFile work the agent holds for
 * callers at once (buffers read, responses not yet handed to HTTP/2). With
 * READ_RAW_BUDGET_BYTES, RECEIVE_BUDGET_BYTES and Exec stdin (40 + 32 + 48 + 4 × 4
 * MiB), V8's heap and the garbage it lets grow before it collects (about 64 MB of
 * buffers) on top, the agent stays within AGENT_MEMORY_BUDGET_BYTES of its idle size.
 */
export const FILE_BUDGET_BYTES = 40 * MiB;
/** Bytes all ReadRaw streams hold at once (two 1 MiB blocks each, for the stream's life). */
export const READ_RAW_BUDGET_BYTES = 32 * MiB;
/**
 * How long a ReadRaw waits for its share before RESOURCE_EXHAUSTED. Long: a
 * waiting stream holds neither memory nor a file descriptor, and a client that
 * opens reads ahead of the one it consumes (an export's lookahead) must see
 * them wait their turn, not fail.
 */
export const READ_RAW_WAIT_MS = 10 * 60_000;
/** How long a ReadRaw handoff keeps its file open for the caller to reach it (fs/read-raw-handoff.ts). */
export const READ_RAW_HANDOFF_HOLD_MS = 30_000;
/** Part of the file budget only small leases (≤ FILE_BUDGET_SMALL_LEASE_BYTES) may use. */
export const FILE_BUDGET_RESERVE_BYTES = 16 * MiB;
/** A lease of at most this many bytes is small: a ReadFile of a file up to 256 KiB, a scan block. */
export const FILE_BUDGET_SMALL_LEASE_BYTES = 1 * MiB;
/** How long file work waits for its lease before RESOURCE_EXHAUSTED. */
export const FILE_BUDGET_WAIT_MS = 5_000;
/** File work waiting for a lease at once, at most; more is refused at once. */
export const FILE_BUDGET_MAX_WAITERS = 1024;
/**
 * Bytes of memory one byte of ReadFile text costs until it is sent when it is
 * copied into its gRPC frame: the bytes read and the frame (the message is
 * encoded by hand through one shared scratch buffer, a fixed cost of at most one
 * message). Text of a file with a size is read into its frame instead and costs
 * one byte per byte (grpc/framed-send.ts); files without one (procfs) pay this.
 */
export const RESPONSE_COST_FACTOR = 2;
/** ReadFile reads a file up to this size whole; a larger one is scanned in blocks and only its window kept. */
export const READ_FILE_WHOLE_MAX_BYTES = 1 * MiB;
/** Block size of ReadFile's scan of a larger file. */
export const READ_FILE_SCAN_BLOCK_BYTES = 256 * 1024;
/** The agent's memory over its idle RSS, at most, whatever its callers do (documented; tests hold it). */
export const AGENT_MEMORY_BUDGET_BYTES = 256 * MiB;
/** Bytes of relative paths a recursive ListDir walk may collect before it answers RESOURCE_EXHAUSTED. */
export const LIST_WALK_MAX_BYTES = 32 * MiB;
/**
 * Bytes of request messages the agent takes in at once (grpc/receive-budget.ts):
 * a message over RECEIVE_UNLEASED_MAX_BYTES leases its announced size times
 * RECEIVE_COST_FACTOR before more than HTTP/2's window of it is received.
 * Room for one message of the largest size and smaller ones beside it.
 */
export const RECEIVE_BUDGET_BYTES = 48 * MiB;
/** Messages up to this size (one HTTP/2 frame) need no lease: Info, Stat, stdin keystrokes. */
export const RECEIVE_UNLEASED_MAX_BYTES = 16 * 1024;
/** Memory one received byte costs until its handler is done: the bytes and the decoded message. */
export const RECEIVE_COST_FACTOR = 2;
/** How long a request message waits for its lease before RESOURCE_EXHAUSTED. */
export const RECEIVE_BUDGET_WAIT_MS = 30_000;
/** Connections served at once (Unix socket and TCP alike); one more is closed at once. */
export const MAX_CONNECTIONS = 64;
/** Concurrent streams (calls) per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
export const MAX_STREAMS_PER_CONNECTION = 100;
/** A connection must send the HTTP/2 connection preface within this time or be closed. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
/** A connection without a call for this long is closed (GOAWAY); clients reconnect on their next call. */
export const CONNECTION_IDLE_MS = 5 * 60_000;
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
/** ReadTree: bytes written to the call and not yet handed to the transport, at most (then it waits). */
export const TREE_INFLIGHT_BYTES = 2 * MiB;
/**
 * ReadTree: estimated bytes of names one call holds across the directories it has
 * open (twice that while it reads one). Sending a directory's names in byte order
 * needs them all first; a directory whose names take more is read in several sorted
 * batches, one more read of it per batch: about 130,000 names of 30 bytes a batch.
 */
export const TREE_NAMES_HELD_BYTES = 8 * MiB;
/**
 * ReadTree with hardlinks: bytes of paths (and keys) it remembers for files with more
 * than one link; beyond that, such files are sent whole under every name.
 */
export const TREE_LINKS_HELD_BYTES = 16 * MiB;
/** ReadTree: bytes of a file read ahead (at open) and bytes per read after that; each block is one data message. */
export const TREE_READ_BLOCK_BYTES = 256 * 1024;
