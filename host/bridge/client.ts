// Host-side client of one bridge agent. Every reply is treated as untrusted:
// stream order, offsets and sizes are checked, collected output is capped. One
// method per RPC, each with the checks its replies need beside it; the longer ones
// live in read-tree.ts and write-raw.ts.
import type * as grpc from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { MiB } from "../../proto/constants.js";
import { RpcClient, RpcError, fromServiceError, type CallOptions } from "../../proto/rpc.js";
import {
  ContainerService,
  type ExecRequestSchema,
  type ExecResponse,
  type ExecStartSchema,
  type FileHandoff,
  type GlobRequestSchema,
  type GrepRequestSchema,
  type JobInfo,
  type ReadJobOutputRequestSchema,
  type ListDirRequestSchema,
  type McpStdioRequestSchema,
  type McpStdioResponse,
  type ReadFileRequestSchema,
  type ReadTreeMessage,
} from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { H2Calls } from "./h2-calls.js";
import { checkTree, protocolError, type TreeEvent } from "./read-tree.js";
import type { PinnedSocket } from "./socket.js";
import { RAW_CHUNK_BYTES, writeRawStream } from "./write-raw.js";

export type { TreeEvent };

export { RAW_CHUNK_BYTES };
/** What exec() collects of stdout and stderr together unless told otherwise. */
export const DEFAULT_EXEC_OUTPUT_BYTES = 16 * MiB;

export interface BridgeClientOptions {
  /** Deadline applied to unary calls that set none. */
  defaultTimeoutMs?: number;
  channelOptions?: grpc.ChannelOptions;
  /**
   * The pinned socket the target dials through (`unix:/proc/self/fd/<fd>`,
   * socket.ts); the client owns it and closes it after the channel.
   */
  socket?: PinnedSocket;
}

export interface ExecResult {
  pid: number;
  code: number;
  signal: string;
  timedOut: boolean;
  durationMs: number;
  stdout: Buffer;
  stderr: Buffer;
  /** Output beyond maxOutputBytes was dropped. */
  truncated: boolean;
}

export interface ExecOptions extends CallOptions {
  /** Collected stdout+stderr cap; the rest is dropped (default DEFAULT_EXEC_OUTPUT_BYTES). */
  maxOutputBytes?: number;
  /**
   * Streamed output. A returned promise pauses the call until it settles (the agent
   * then pauses the command's output: a slow reader slows the command instead of
   * filling this process's memory); a rejection ends the call with that error.
   */
  onStdout?: (chunk: Uint8Array) => void | Promise<void>;
  onStderr?: (chunk: Uint8Array) => void | Promise<void>;
}

/**
 * A path in a workspace: text (UTF-8), or the exact bytes of a name that is
 * not UTF-8 (FileInfo's path_bytes / name_bytes, as ListDir and Stat report them).
 */
export type WorkspacePath = string | Uint8Array;

/** The path fields of a request for `p`: exactly one of path and path_bytes is set. */
export function pathFields(p: WorkspacePath): { path: string; pathBytes: Uint8Array } {
  return typeof p === "string" ? { path: p, pathBytes: new Uint8Array(0) } : { path: "", pathBytes: p };
}

/** How to name a listed or stat'ed file in a request: its bytes when its text is only a lossy form. */
export function entryPath(info: { path: string; pathBytes: Uint8Array }): WorkspacePath {
  return info.pathBytes.byteLength > 0 ? info.pathBytes : info.path;
}


export class BridgeClient {
  /** The grpc-js channel: streams with client messages (WriteRaw, Exec, McpStdio), and the pool's view of the agent's health. */
  readonly rpc: RpcClient;
  /**
   * Unary and server-streaming calls framed here (h2-calls.ts: less than half
   * grpc-js's CPU per call) over the host's own HTTP/2 connection (h2-connection.ts),
   * through the same (pinned) unix socket; a TCP target (legacy containers) calls
   * everything through grpc-js.
   */
  private readonly h2: H2Calls | undefined;
  private readonly defaultTimeoutMs: number;
  private readonly socket: PinnedSocket | undefined;

  constructor(readonly target: string, opts: BridgeClientOptions = {}) {
    this.rpc = new RpcClient(target, undefined, opts.channelOptions);
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 30_000;
    this.socket = opts.socket;
    const unixPath = opts.socket ? `/proc/self/fd/${opts.socket.fd}` : target.startsWith("unix:") ? target.slice("unix:".length) : undefined;
    this.h2 = unixPath === undefined ? undefined : new H2Calls(unixPath);
  }

  private unary<M extends DescMethod & { methodKind: "unary" }>(method: M, input: MessageInitShape<M["input"]>, opts: CallOptions): Promise<MessageShape<M["output"]>> {
    return this.h2 ? this.h2.unary(method, input, opts) : this.rpc.unary(method, input, opts);
  }

  private serverStream<M extends DescMethod & { methodKind: "server_streaming" }>(method: M, input: MessageInitShape<M["input"]>, opts?: CallOptions): AsyncIterable<MessageShape<M["output"]>> & { cancel(): void } {
    if (!this.h2) return this.rpc.serverStream(method, input, opts);
    const it = this.h2.serverStream(method, input, opts);
    return Object.assign(it, { cancel: () => void it.return(undefined) });
  }

  private withDeadline(opts?: CallOptions): CallOptions {
    return { ...opts, timeoutMs: opts?.timeoutMs ?? this.defaultTimeoutMs };
  }

  waitReady(timeoutMs: number): Promise<void> {
    return this.rpc.waitForReady(timeoutMs);
  }

  close(): void {
    this.h2?.close();
    this.rpc.close();
    const socket = this.socket;
    // A turn of the event loop later: a dial grpc-js began before close()
    // still goes through the pinned fd (to the checked socket, where the closed
    // channel drops the connection), never through a file that reused its number.
    if (socket) setImmediate(() => socket.close());
  }

  info(opts?: CallOptions) {
    return this.unary(ContainerService.method.info, {}, this.withDeadline(opts));
  }

  stat(path: WorkspacePath, opts?: CallOptions) {
    return this.unary(ContainerService.method.stat, pathFields(path), this.withDeadline(opts));
  }

  /**
   * One page of a listing. The agent bounds pages by count and bytes: follow
   * `nextOffset` while `hasMore` (a page may hold fewer than `limit` entries).
   */
  async listDir(req: MessageInitShape<typeof ListDirRequestSchema>, opts?: CallOptions) {
    const res = await this.unary(ContainerService.method.listDir, req, this.withDeadline(opts));
    const offset = req.offset ?? 0;
    // An agent older than next_offset leaves it 0; its pages were never cut short.
    if (res.nextOffset === 0 && offset + res.entries.length > 0) res.nextOffset = offset + res.entries.length;
    if (res.nextOffset < offset || res.nextOffset - offset < res.entries.length) {
      throw protocolError(`ListDir at offset ${offset} returned ${res.entries.length} entries but next_offset ${res.nextOffset}`);
    }
    if (res.hasMore && res.nextOffset === offset) throw protocolError(`ListDir at offset ${offset} has more but did not advance`);
    return res;
  }

  readFile(req: MessageInitShape<typeof ReadFileRequestSchema>, opts?: CallOptions) {
    return this.unary(ContainerService.method.readFile, req, this.withDeadline(opts));
  }

  /** Text content goes as UTF-8: its size is the size of those bytes, which is what the message carries. */
  writeFile(path: WorkspacePath, content: Uint8Array | string, mode = 0, opts?: CallOptions) {
    const bytes = typeof content === "string" ? new TextEncoder().encode(content) : content;
    return this.unary(ContainerService.method.writeFile, { ...pathFields(path), content: bytes, mode }, this.withDeadline(opts));
  }

  mkdir(path: WorkspacePath, parents = true, opts?: CallOptions) {
    return this.unary(ContainerService.method.mkdir, { ...pathFields(path), parents }, this.withDeadline(opts));
  }

  rename(from: WorkspacePath, to: WorkspacePath, overwrite = false, opts?: CallOptions) {
    const f = pathFields(from);
    const t = pathFields(to);
    return this.unary(
      ContainerService.method.rename,
      { from: f.path, fromBytes: f.pathBytes, to: t.path, toBytes: t.pathBytes, overwrite },
      this.withDeadline(opts),
    );
  }

  deleteFile(path: WorkspacePath, recursive = false, opts?: CallOptions) {
    return this.unary(ContainerService.method.deleteFile, { ...pathFields(path), recursive }, this.withDeadline(opts));
  }

  /** Streams a file's bytes; checks that chunks are contiguous and within the requested range. */
  async *readRaw(
    path: WorkspacePath,
    range: { offset?: number; length?: number; onFileSize?: (size: number) => void } = {},
    opts?: CallOptions,
  ): AsyncGenerator<Uint8Array> {
    const offset = range.offset ?? 0;
    const call = this.serverStream(
      ContainerService.method.readRaw,
      { ...pathFields(path), offset: BigInt(offset), length: BigInt(range.length ?? 0) },
      opts,
    );
    let expected = BigInt(offset);
    const limit = range.length ? BigInt(offset + range.length) : undefined;
    let first = true;
    try {
      for await (const chunk of call) {
        if (chunk.offset !== expected) throw protocolError(`ReadRaw chunk at ${chunk.offset}, expected ${expected}`);
        if (first) {
          // The size of the file the agent opened (fstat of its fd), in the first chunk.
          first = false;
          if (chunk.fileSize < 0n || chunk.fileSize > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`ReadRaw file size ${chunk.fileSize}`);
          range.onFileSize?.(Number(chunk.fileSize));
        }
        expected += BigInt(chunk.data.length);
        if (limit !== undefined && expected > limit) throw protocolError("ReadRaw returned more than requested");
        if (chunk.data.length > 0) yield chunk.data;
      }
    } catch (err) {
      throw err instanceof RpcError ? err : fromServiceError(err as Error);
    } finally {
      call.cancel();
    }
  }

  /**
   * ReadRaw asking for a handoff: the agent's open descriptor of the file, which it holds
   * until `release()` (or for 30 s), for a caller on its host to open through
   * /proc/<pid>/fd/<fd> (workspace/file-handoff.ts). Undefined (the call cancelled)
   * when the agent streamed the bytes instead: a file reporting size 0, or an agent
   * without capability "read-raw-handoff". Errors are ReadRaw's (a directory, a FIFO,
   * an offset past the end).
   */
  async readRawHandoff(
    path: WorkspacePath,
    range: { offset?: number; length?: number } = {},
    opts?: CallOptions,
  ): Promise<{ fileSize: number; handoff: FileHandoff; release(): void } | undefined> {
    const offset = range.offset ?? 0;
    const call = this.serverStream(
      ContainerService.method.readRaw,
      { ...pathFields(path), offset: BigInt(offset), length: BigInt(range.length ?? 0), handoff: true },
      opts,
    );
    let held = false;
    try {
      const first = await call[Symbol.asyncIterator]().next();
      if (first.done) throw protocolError("ReadRaw ended without a chunk");
      const chunk = first.value;
      if (chunk.handoff === undefined) return undefined;
      if (chunk.data.length > 0 || chunk.offset !== BigInt(offset)) throw protocolError(`ReadRaw handoff with data or at ${chunk.offset}, expected ${offset}`);
      if (chunk.fileSize <= 0n || chunk.fileSize > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`ReadRaw handoff of a file of ${chunk.fileSize} bytes`);
      held = true;
      return { fileSize: Number(chunk.fileSize), handoff: chunk.handoff, release: () => call.cancel() };
    } catch (err) {
      throw err instanceof RpcError ? err : fromServiceError(err as Error);
    } finally {
      if (!held) call.cancel();
    }
  }

  /**
   * A directory tree in one stream (agents with capability "read-tree"): the root's
   * entry first (empty path), then every entry depth first; a FILE entry is followed by
   * exactly `size` bytes of data events, or fewer and a truncated event. The order of
   * records, the paths and the byte counts are checked; a stream that breaks them fails
   * with INTERNAL (protocol violation). With `hardlinks`, a later name of a file with
   * several links comes as a FILE entry naming the earlier one (hardlinkTarget), no data.
   */
  async *readTree(path: WorkspacePath, limits: { maxDepth?: number; maxEntries?: number; hardlinks?: boolean } = {}, opts?: CallOptions): AsyncGenerator<TreeEvent> {
    const call = this.serverStream(
      ContainerService.method.readTree,
      { ...pathFields(path), maxDepth: limits.maxDepth ?? 0, maxEntries: limits.maxEntries ?? 0, hardlinks: limits.hardlinks ?? false },
      opts,
    );
    try {
      yield* checkTree(call as AsyncIterable<ReadTreeMessage>, { hardlinks: limits.hardlinks ?? false });
    } catch (err) {
      throw err instanceof RpcError ? err : fromServiceError(err as Error);
    } finally {
      call.cancel();
    }
  }

  /** Streams bytes into a file that appears atomically once all of them arrived (write-raw.ts). */
  writeRaw(
    path: WorkspacePath,
    source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    opts: CallOptions & { mode?: number } = {},
  ): Promise<{ bytesWritten: number; sha256: string }> {
    const { mode, ...callOpts } = opts;
    return writeRawStream(this.rpc, { ...pathFields(path), mode: mode ?? 0 }, source, callOpts);
  }

  /** The raw Exec stream, for interactive use (PTY, streaming stdin). */
  execStream(opts?: CallOptions): grpc.ClientDuplexStream<MessageInitShape<typeof ExecRequestSchema>, ExecResponse> {
    return this.rpc.bidi(ContainerService.method.exec, opts);
  }

  /** Runs a command to completion and collects its output. */
  exec(start: MessageInitShape<typeof ExecStartSchema>, opts: ExecOptions = {}): Promise<ExecResult> {
    const cap = opts.maxOutputBytes ?? DEFAULT_EXEC_OUTPUT_BYTES;
    const call = this.execStream(opts);
    return new Promise<ExecResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let collected = 0;
      let truncated = false;
      let pid: number | undefined;
      let exit: ExecResult | undefined;
      const keep = (target: Buffer[], data: Uint8Array) => {
        const room = cap - collected;
        if (room <= 0) {
          truncated = true;
          return;
        }
        const part = data.length > room ? data.subarray(0, room) : data;
        if (part.length < data.length) truncated = true;
        target.push(Buffer.from(part));
        collected += part.length;
      };
      const fail = (e: Error) => {
        call.cancel();
        reject(e);
      };
      const deliver = (handler: ((chunk: Uint8Array) => void | Promise<void>) | undefined, data: Uint8Array) => {
        const waiting = handler?.(data);
        if (waiting === undefined) return;
        call.pause();
        waiting.then(
          () => call.resume(),
          (e: unknown) => fail(e instanceof Error ? e : new Error(String(e))),
        );
      };
      call.on("data", (res: ExecResponse) => {
        const m = res.msg;
        if (exit) return fail(protocolError("Exec sent data after exit"));
        if (m.case !== "started" && pid === undefined) return fail(protocolError(`Exec sent ${m.case} before started`));
        switch (m.case) {
          case "started":
            if (pid !== undefined) return fail(protocolError("Exec sent started twice"));
            pid = m.value.pid;
            break;
          case "stdout":
            deliver(opts.onStdout, m.value);
            keep(out, m.value);
            break;
          case "stderr":
            deliver(opts.onStderr, m.value);
            keep(err, m.value);
            break;
          case "exit":
            exit = {
              pid: pid ?? 0,
              code: m.value.code,
              signal: m.value.signal,
              timedOut: m.value.timedOut,
              durationMs: m.value.durationMs,
              stdout: Buffer.concat(out),
              stderr: Buffer.concat(err),
              truncated,
            };
            break;
          default:
            return fail(protocolError("Exec sent an empty message"));
        }
      });
      call.on("error", (e: Error) => reject(fromServiceError(e)));
      call.on("end", () => {
        if (exit) resolve(exit);
        else reject(protocolError("Exec ended without an exit"));
      });
      call.write({ msg: { case: "start", value: { ...start, closeStdin: start.closeStdin ?? true } } });
      call.end();
    });
  }

  /** The raw McpStdio stream. */
  mcpStdio(opts?: CallOptions): grpc.ClientDuplexStream<MessageInitShape<typeof McpStdioRequestSchema>, McpStdioResponse> {
    return this.rpc.bidi(ContainerService.method.mcpStdio, opts);
  }

  // ---------------------------------------------------------------- background jobs

  /** Starts a background job (argv or command, like exec); the agent keeps it, whatever happens to this call. */
  async startJob(start: MessageInitShape<typeof ExecStartSchema>, opts?: CallOptions): Promise<JobInfo> {
    const res = await this.unary(ContainerService.method.startJob, { exec: start }, this.withDeadline(opts));
    if (!res.job) throw protocolError("StartJob answered without a job");
    return res.job;
  }

  async listJobs(opts?: CallOptions): Promise<JobInfo[]> {
    return (await this.unary(ContainerService.method.listJobs, {}, this.withDeadline(opts))).jobs;
  }

  async getJob(id: string, opts?: CallOptions): Promise<JobInfo> {
    const res = await this.unary(ContainerService.method.getJob, { id }, this.withDeadline(opts));
    if (!res.job) throw protocolError("GetJob answered without a job");
    return res.job;
  }

  /** A job's stdout or stderr from an offset (or its tail); checks the reply stays within what was asked. */
  async readJobOutput(req: MessageInitShape<typeof ReadJobOutputRequestSchema>, opts?: CallOptions) {
    const res = await this.unary(ContainerService.method.readJobOutput, req, this.withDeadline(opts));
    const asked = req.offset ?? 0n;
    const max = req.tailBytes || req.maxBytes || 64 * 1024;
    if (res.data.byteLength > max) throw protocolError(`ReadJobOutput returned ${res.data.byteLength} bytes, more than the ${max} asked for`);
    if (!req.tailBytes && res.offset < asked) throw protocolError(`ReadJobOutput returned data from offset ${res.offset}, before the ${asked} asked for`);
    if (res.offset + BigInt(res.data.byteLength) > res.total) throw protocolError("ReadJobOutput returned data past the end of the stream");
    return res;
  }

  /** Waits (on the agent) for the job's end, a timeout, or idle output; the call's deadline leaves room for the wait. */
  async waitJob(id: string, timeoutMs: number, idleTimeoutMs = 0, opts?: CallOptions) {
    const res = await this.unary(ContainerService.method.waitJob, { id, timeoutMs, idleTimeoutMs }, { ...opts, timeoutMs: opts?.timeoutMs ?? timeoutMs + this.defaultTimeoutMs });
    if (!res.job) throw protocolError("WaitJob answered without a job");
    return { outcome: res.outcome, job: res.job };
  }

  /** Signals the job's whole process group (default SIGKILL). */
  async signalJob(id: string, signal = "SIGKILL", opts?: CallOptions): Promise<JobInfo> {
    const res = await this.unary(ContainerService.method.signalJob, { id, signal }, this.withDeadline(opts));
    if (!res.job) throw protocolError("SignalJob answered without a job");
    return res.job;
  }

  // ---------------------------------------------------------------- search

  /** Grep run by the agent; the deadline leaves room for the agent's own time budget. */
  grep(req: MessageInitShape<typeof GrepRequestSchema>, opts?: CallOptions) {
    return this.unary(ContainerService.method.grep, req, { ...opts, timeoutMs: opts?.timeoutMs ?? (req.timeoutMs || 10_000) + this.defaultTimeoutMs });
  }

  glob(req: MessageInitShape<typeof GlobRequestSchema>, opts?: CallOptions) {
    return this.unary(ContainerService.method.glob, req, { ...opts, timeoutMs: opts?.timeoutMs ?? (req.timeoutMs || 10_000) + this.defaultTimeoutMs });
  }
}
