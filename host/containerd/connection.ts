// One gRPC connection to containerd. Every call carries the namespace header,
// and the lease header when it runs under a lease; every error comes back as a
// ContainerdError with a stable code.
import fs from "node:fs";
import type * as grpc from "@grpc/grpc-js";
import type { DescMethod, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { RpcClient, type CallOptions } from "../../proto/rpc.js";
import { ContainerdError, toContainerdError } from "./errors.js";

export const DEFAULT_ADDRESS = "/run/containerd/containerd.sock";

export interface ConnectionOptions {
  /** Unix socket path of containerd (default /run/containerd/containerd.sock). */
  address?: string;
  namespace: string;
  /** Deadline for unary calls that set none (default 30 s). */
  defaultTimeoutMs?: number;
}

export interface ContainerdCallOptions {
  /** Protects what the call creates from GC until the lease is deleted. */
  lease?: string;
  /** Overrides the connection's namespace. */
  namespace?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

type UnaryMethod = DescMethod & { methodKind: "unary" };
type ServerStreamMethod = DescMethod & { methodKind: "server_streaming" };
type BidiMethod = DescMethod & { methodKind: "bidi_streaming" };

export class ContainerdConnection {
  readonly address: string;
  readonly namespace: string;
  readonly rpc: RpcClient;
  private readonly defaultTimeoutMs: number;

  constructor(opts: ConnectionOptions) {
    this.address = opts.address ?? DEFAULT_ADDRESS;
    this.namespace = opts.namespace;
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 30_000;
    this.rpc = new RpcClient(`unix:${this.address}`, undefined, {
      // containerd answers big list calls; the bridge's 16 MiB is the project-wide cap.
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
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

  serverStream<M extends ServerStreamMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
    opts?: ContainerdCallOptions,
  ): grpc.ClientReadableStream<MessageShape<M["output"]>> {
    return this.rpc.serverStream(method, input, this.callOptions(opts, false));
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
