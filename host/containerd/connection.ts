// One gRPC connection to containerd. Every call carries the namespace header,
// and the lease header when it runs under a lease; every error comes back as a
// ContainerdError with a stable code.
//
// No call waits forever on a daemon that stopped answering:
// - unary calls have a deadline (defaultTimeoutMs unless the call sets one);
// - server streams (Content.Read, the List streams) fail with DEADLINE_EXCEEDED
//   when no message arrives for streamIdleTimeoutMs while the reader wants one;
//   list streams also get a deadline for the whole call;
// - Events.Subscribe is silent for as long as nothing happens, so it has no idle
//   timeout; HTTP/2 keepalive pings find a hung daemon instead (a daemon that
//   exited closes the socket, which fails every call at once). containerd's gRPC
//   server keeps grpc-go's keepalive enforcement (pings at most every 5 minutes,
//   none without an open call) and answers pings sent more often with a GOAWAY
//   "too_many_pings" that drops the connection and every stream on it. So the
//   client pings every 5.5 minutes, and only while a call is open.
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { MAX_MESSAGE_BYTES } from "../../proto/constants.js";
import { RpcClient, Status, type CallOptions } from "../../proto/rpc.js";
import { ContainerdError, toContainerdError } from "./errors.js";

export const DEFAULT_ADDRESS = "/run/containerd/containerd.sock";
export const DEFAULT_STREAM_IDLE_TIMEOUT_MS = 60_000;
/** Above grpc-go's default keepalive MinTime (5 min), which containerd does not change. */
export const DEFAULT_KEEPALIVE_TIME_MS = 330_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 20_000;

export interface ConnectionOptions {
  /** Unix socket path of containerd (default /run/containerd/containerd.sock). */
  address?: string;
  namespace: string;
  /** Deadline for unary calls that set none (default 30 s); list streams get it for the whole stream. */
  defaultTimeoutMs?: number;
  /** Longest wait for the next message of a server stream (default 60 s); 0: none. */
  streamIdleTimeoutMs?: number;
  /**
   * Interval of HTTP/2 keepalive pings while a call is open (default 330 s).
   * Below 5 minutes containerd answers with GOAWAY "too_many_pings" after three
   * pings; only tests that stop the daemon soon after should go lower.
   */
  keepaliveTimeMs?: number;
  /** How long a ping may go unanswered before the connection counts as dead (default 20 s). */
  keepaliveTimeoutMs?: number;
}

export interface ContainerdCallOptions {
  /** Protects what the call creates from GC until the lease is deleted. */
  lease?: string;
  /** Overrides the connection's namespace. */
  namespace?: string;
  /** Deadline of the whole call. */
  timeoutMs?: number;
  /** Server streams: longest wait for the next message (default: the connection's streamIdleTimeoutMs); 0: none. */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
}

type UnaryMethod = DescMethod & { methodKind: "unary" };
type ServerStreamMethod = DescMethod & { methodKind: "server_streaming" };
type BidiMethod = DescMethod & { methodKind: "bidi_streaming" };

export class ContainerdConnection {
  readonly address: string;
  readonly namespace: string;
  readonly rpc: RpcClient;
  readonly defaultTimeoutMs: number;
  readonly streamIdleTimeoutMs: number;
  /** The idle timeout of the server stream being created right now (read by the interceptor, synchronously). */
  private idleTimeoutForNextCall = 0;

  constructor(opts: ConnectionOptions) {
    this.address = opts.address ?? DEFAULT_ADDRESS;
    this.namespace = opts.namespace;
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 30_000;
    this.streamIdleTimeoutMs = opts.streamIdleTimeoutMs ?? DEFAULT_STREAM_IDLE_TIMEOUT_MS;
    const durations = { defaultTimeoutMs: this.defaultTimeoutMs, streamIdleTimeoutMs: this.streamIdleTimeoutMs, keepaliveTimeMs: opts.keepaliveTimeMs, keepaliveTimeoutMs: opts.keepaliveTimeoutMs };
    for (const [name, value] of Object.entries(durations)) {
      if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
        throw new ContainerdError("invalid_argument", `containerd connection: ${name} must be a number of milliseconds >= 0, got ${value}`);
      }
    }
    this.rpc = new RpcClient(`unix:${this.address}`, undefined, {
      // containerd answers big list calls; the bridge's 16 MiB is the project-wide cap.
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": opts.keepaliveTimeMs ?? DEFAULT_KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": opts.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
      // containerd counts a ping without an open call as abuse (grpc-go's PermitWithoutStream=false).
      "grpc.keepalive_permit_without_calls": 0,
      interceptors: [idleTimeoutInterceptor(() => this.idleTimeoutForNextCall)],
    });
  }

  /** Fails with a clear "unavailable" error when the socket is missing or nobody answers. */
  async ready(timeoutMs = 5_000): Promise<void> {
    if (!fs.existsSync(this.address)) {
      throw new ContainerdError("unavailable", `containerd socket ${this.address} does not exist: is containerd running?`);
    }
    try {
      await this.rpc.waitForReady(timeoutMs);
    } catch (err) {
      throw new ContainerdError("unavailable", `containerd at ${this.address} did not answer within ${timeoutMs} ms`, { cause: err });
    }
  }

  metadata(opts?: ContainerdCallOptions): Record<string, string> {
    const md: Record<string, string> = { "containerd-namespace": opts?.namespace ?? this.namespace };
    if (opts?.lease) md["containerd-lease"] = opts.lease;
    return md;
  }

  private callOptions(opts: ContainerdCallOptions | undefined, defaultTimeout: boolean): CallOptions {
    const timeoutMs = opts?.timeoutMs ?? (defaultTimeout ? this.defaultTimeoutMs : undefined);
    return { metadata: this.metadata(opts), ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(opts?.signal ? { signal: opts.signal } : {}) };
  }

  async unary<M extends UnaryMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
    opts?: ContainerdCallOptions,
  ): Promise<MessageShape<M["output"]>> {
    try {
      return await this.rpc.unary(method, input, this.callOptions(opts, true));
    } catch (err) {
      throw this.wrap(err, method);
    }
  }

  /**
   * A server stream. It fails with DEADLINE_EXCEEDED when the reader waits
   * longer than the idle timeout for the next message, and when `timeoutMs`
   * (the whole call) runs out.
   */
  serverStream<M extends ServerStreamMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
    opts?: ContainerdCallOptions,
  ): grpc.ClientReadableStream<MessageShape<M["output"]>> {
    this.idleTimeoutForNextCall = opts?.idleTimeoutMs ?? this.streamIdleTimeoutMs;
    try {
      return this.rpc.serverStream(method, input, this.callOptions(opts, false));
    } finally {
      this.idleTimeoutForNextCall = 0;
    }
  }

  /** A list stream: the idle timeout, and a deadline for the whole call (defaultTimeoutMs unless set). */
  listStream<M extends ServerStreamMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
    opts?: ContainerdCallOptions,
  ): grpc.ClientReadableStream<MessageShape<M["output"]>> {
    return this.serverStream(method, input, { ...opts, timeoutMs: opts?.timeoutMs ?? this.defaultTimeoutMs });
  }

  bidi<M extends BidiMethod>(
    method: M,
    opts?: ContainerdCallOptions,
  ): grpc.ClientDuplexStream<MessageInitShape<M["input"]>, MessageShape<M["output"]>> {
    return this.rpc.bidi(method, this.callOptions(opts, false));
  }

  /** Wraps an error from a call of `method` (also for stream errors). */
  wrap(err: unknown, method: DescMethod): ContainerdError {
    const e = toContainerdError(err, `containerd ${method.parent.name}.${method.name}`);
    if (e.code === "unavailable" && !fs.existsSync(this.address)) {
      return new ContainerdError("unavailable", `${e.message} (socket ${this.address} is gone: is containerd running?)`, { cause: err });
    }
    return e;
  }

  close(): void {
    this.rpc.close();
  }
}

/**
 * Cancels a call with DEADLINE_EXCEEDED when its reader has asked for a message
 * (startRead) and none came within the idle timeout. Only the call created
 * while `idleTimeoutMs()` is nonzero gets a timer: grpc-js runs interceptors
 * synchronously inside makeServerStreamRequest. A reader that stops reading
 * stops the timer too (grpc-js only asks for more while its buffer has room).
 */
function idleTimeoutInterceptor(idleTimeoutMs: () => number): grpc.Interceptor {
  return (options, nextCall) => {
    const idleMs = idleTimeoutMs();
    if (idleMs <= 0) return new grpc.InterceptingCall(nextCall(options));
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const disarm = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    };
    const call: grpc.InterceptingCall = new (class extends grpc.InterceptingCall {
      override startRead(): void {
        if (!done && !timer) {
          timer = setTimeout(() => {
            timer = undefined;
            call.cancelWithStatus(Status.DEADLINE_EXCEEDED, `no message from containerd for ${idleMs} ms`);
          }, idleMs);
        }
        super.startRead();
      }
      override cancelWithStatus(status: grpc.status, details: string): void {
        done = true;
        disarm();
        super.cancelWithStatus(status, details);
      }
    })(nextCall(options), {
      start(metadata, _listener, next) {
        next(metadata, {
          onReceiveMessage(message, nextMessage) {
            disarm();
            nextMessage(message);
          },
          onReceiveStatus(status, nextStatus) {
            done = true;
            disarm();
            nextStatus(status);
          },
        });
      },
    });
    return call;
  };
}
