// One small adapter between protobuf-es service descriptors and @grpc/grpc-js,
// used by both the bridge agent (serving) and the host (calling the agent and
// containerd). grpc-js moves bytes; protobuf-es encodes and decodes them.
import * as grpc from "@grpc/grpc-js";
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";

export const Status = grpc.status;
export type StatusCode = grpc.status;

import { MAX_MESSAGE_BYTES } from "./constants.js";
import { GRPC_PREFIX_BYTES } from "./wire.js";

export { MAX_MESSAGE_BYTES };

/** An error that carries a gRPC status code; thrown by handlers, returned to callers. */
export class RpcError extends Error {
  readonly code: StatusCode;
  constructor(code: StatusCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RpcError";
    this.code = code;
  }
  get codeName(): string {
    return Status[this.code] ?? String(this.code);
  }
}

/** The gRPC status code of an error from a call, or undefined when it has none. */
export function rpcCode(err: unknown): StatusCode | undefined {
  if (err instanceof RpcError) return err.code;
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === "number" && code >= 0 && code <= 16) return code as StatusCode;
  }
  return undefined;
}

function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * A message encoded by hand rather than by protobuf-es. Bulk streams (ReadRaw)
 * use it: protobuf-es's generic writer copies every payload byte into a fresh
 * array and slows down a lot once its code was optimised for small messages.
 * `encode` runs when grpc-js serializes the message, which on the server side
 * copies the result into its own frame at once, so `encode` may return a view
 * of a reused scratch buffer (see proto/wire.ts).
 */
export class PreEncoded {
  /**
   * `framed`, when set, is the whole gRPC frame: the 5-byte prefix (not compressed,
   * length) and then the message. A server whose send path takes frames as they
   * are (agent/grpc/framed-send.ts) writes it without the copy grpc-js makes;
   * any other sender uses `encode`, the message alone.
   */
  constructor(
    readonly encode: () => Buffer,
    readonly framed?: Buffer,
  ) {}
}

/** Passes encoded bytes, or a hand encoder, where a stream expects a message of type T. */
export function preEncoded<T>(bytes: Buffer | (() => Buffer)): T {
  return new PreEncoded(typeof bytes === "function" ? bytes : () => bytes) as unknown as T;
}

/** Passes a whole gRPC frame (proto/wire.ts frameAround) where a call expects a message of type T. */
export function preFramed<T>(frame: Buffer): T {
  return new PreEncoded(() => frame.subarray(GRPC_PREFIX_BYTES), frame) as unknown as T;
}

function serializer<D extends DescMessage>(schema: D) {
  // A Buffer view of the encoded bytes, not a copy: bulk streams (ReadRaw,
  // WriteRaw) would otherwise copy every chunk once more.
  return (value: MessageInitShape<D>): Buffer => {
    if (value instanceof PreEncoded) return value.encode();
    const bytes = toBinary(schema, create(schema, value));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D) {
  return (bytes: Buffer): MessageShape<D> => fromBinary(schema, bytes);
}

/** A grpc-js service definition built from a protobuf-es service descriptor. */
export function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    def[method.localName] = {
      path: methodPath(method),
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input) as (v: unknown) => Buffer,
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
  }
  return def;
}

// ---------------------------------------------------------------- server side

type MethodShape = Pick<DescMethod, "input" | "output" | "methodKind">;
type In<M extends MethodShape> = MessageShape<M["input"]>;
type OutInit<M extends MethodShape> = MessageInitShape<M["output"]>;

export type UnaryHandler<M extends MethodShape> = (
  request: In<M>,
  call: grpc.ServerUnaryCall<In<M>, OutInit<M>>,
) => Promise<OutInit<M>>;
export type ServerStreamHandler<M extends MethodShape> = (
  request: In<M>,
  call: grpc.ServerWritableStream<In<M>, OutInit<M>>,
) => Promise<void>;
export type ClientStreamHandler<M extends MethodShape> = (
  call: grpc.ServerReadableStream<In<M>, OutInit<M>>,
) => Promise<OutInit<M>>;
export type BidiHandler<M extends MethodShape> = (
  call: grpc.ServerDuplexStream<In<M>, OutInit<M>>,
) => Promise<void>;

export type Handler<M extends MethodShape> = M["methodKind"] extends "unary"
  ? UnaryHandler<M>
  : M["methodKind"] extends "server_streaming"
    ? ServerStreamHandler<M>
    : M["methodKind"] extends "client_streaming"
      ? ClientStreamHandler<M>
      : BidiHandler<M>;

/** Async handlers for every method of a generated service, keyed by local name. */
export type ServiceHandlers<S extends { method: Record<string, MethodShape> }> = {
  [K in keyof S["method"]]: Handler<S["method"][K]>;
};

/** Turns any thrown value into a status for the caller. */
export type ErrorMapper = (err: unknown) => { code: StatusCode; details: string };

export const defaultErrorMapper: ErrorMapper = (err) => {
  const code = rpcCode(err);
  const message = err instanceof Error ? err.message : String(err);
  if (code !== undefined) return { code, details: message };
  return { code: Status.INTERNAL, details: `internal error: ${message}` };
};

function toServiceError(mapError: ErrorMapper, err: unknown): Partial<grpc.StatusObject> & Error {
  const { code, details } = mapError(err);
  const e = new Error(details) as Error & Partial<grpc.StatusObject>;
  e.code = code;
  e.details = details;
  return e;
}

/**
 * Adds a protobuf-es service to a grpc-js server with async handlers. A
 * handler's rejection becomes the call's status (through mapError); a
 * streaming handler's resolution ends the stream with OK.
 */
export function addService<S extends DescService & { method: Record<string, MethodShape> }>(
  server: grpc.Server,
  service: S,
  handlers: ServiceHandlers<S>,
  mapError: ErrorMapper = defaultErrorMapper,
): void {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = (handlers as Record<string, unknown>)[method.localName] as (
      ...args: unknown[]
    ) => Promise<unknown>;
    if (typeof handler !== "function") throw new Error(`no handler for ${method.name}`);
    switch (method.methodKind) {
      case "unary":
        impl[method.localName] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          handler(call.request, call).then(
            (res) => callback(null, res),
            (err: unknown) => callback(toServiceError(mapError, err)),
          );
        }) as grpc.handleUnaryCall<unknown, unknown>;
        break;
      case "client_streaming":
        impl[method.localName] = ((call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          handler(call).then(
            (res) => callback(null, res),
            (err: unknown) => callback(toServiceError(mapError, err)),
          );
        }) as grpc.handleClientStreamingCall<unknown, unknown>;
        break;
      case "server_streaming":
        impl[method.localName] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
          handler(call.request, call).then(
            () => { if (!call.writableEnded) call.end(); },
            (err: unknown) => { if (!call.writableEnded) call.emit("error", toServiceError(mapError, err)); },
          );
        }) as grpc.handleServerStreamingCall<unknown, unknown>;
        break;
      case "bidi_streaming":
        impl[method.localName] = ((call: grpc.ServerDuplexStream<unknown, unknown>) => {
          handler(call).then(
            () => { if (!call.writableEnded) call.end(); },
            (err: unknown) => { if (!call.writableEnded) call.emit("error", toServiceError(mapError, err)); },
          );
        }) as grpc.handleBidiStreamingCall<unknown, unknown>;
        break;
    }
  }
  server.addService(serviceDefinition(service), impl);
}

// ---------------------------------------------------------------- client side

export interface CallOptions {
  /** Milliseconds from now; the call fails with DEADLINE_EXCEEDED after it. */
  timeoutMs?: number;
  metadata?: Record<string, string>;
  /** Cancels the call (CANCELLED) when aborted. */
  signal?: AbortSignal;
}

type UnaryMethod = DescMethod & { methodKind: "unary" };
type ServerStreamMethod = DescMethod & { methodKind: "server_streaming" };
type ClientStreamMethod = DescMethod & { methodKind: "client_streaming" };
type BidiMethod = DescMethod & { methodKind: "bidi_streaming" };

function toMetadata(values: Record<string, string> | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (values) for (const [k, v] of Object.entries(values)) md.set(k, v);
  return md;
}

function toCallOptions(opts: CallOptions | undefined): grpc.CallOptions {
  return opts?.timeoutMs !== undefined ? { deadline: Date.now() + opts.timeoutMs } : {};
}

function bindSignal(call: { cancel(): void }, signal: AbortSignal | undefined): void {
  if (!signal) return;
  if (signal.aborted) {
    call.cancel();
    return;
  }
  signal.addEventListener("abort", () => call.cancel(), { once: true });
}

/** Turns a grpc-js ServiceError into an RpcError that keeps its code. */
export function fromServiceError(err: grpc.ServiceError | Error): RpcError {
  if (err instanceof RpcError) return err;
  const code = rpcCode(err) ?? Status.UNKNOWN;
  const details = (err as Partial<grpc.ServiceError>).details ?? err.message;
  return new RpcError(code, details, { cause: err });
}

export const defaultChannelOptions: grpc.ChannelOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  // HTTP/2's default 64 KiB receive window makes a server stream of 64 KiB
  // messages wait for a WINDOW_UPDATE round trip per message; a 4 MiB window
  // made ReadRaw between two processes about 1.5x faster.
  "grpc-node.flow_control_window": 4 * 1024 * 1024,
};

type SecureConnector = ReturnType<grpc.ChannelCredentials["_createSecureConnector"]>;

/**
 * Channel credentials that stop their channel from dialling once it is closed.
 * grpc-js 1.14 does not: closing a channel releases its subchannels, but one
 * that is backing off after a failed connect keeps its backoff timer, and when
 * the timer fires it connects once more if anything asked it to connect
 * meanwhile (a call, getConnectivityState(true)). Toward an address that
 * vanished (a deleted legacy container's IP) that connect sits in SYN-SENT and
 * holds the process open until the kernel gives up, about two minutes.
 * Every grpc-js connect awaits waitForReady() before it dials and hands the
 * connected socket to connect(): once closed, the first refuses and the second
 * destroys the socket. (A TCP connect already under way when close() runs
 * cannot be cut short: grpc-js never shuts its connector down.)
 */
class ClosableCredentials extends grpc.ChannelCredentials {
  private closed = false;

  constructor(private readonly inner: grpc.ChannelCredentials) {
    super();
  }

  close(): void {
    this.closed = true;
  }

  _isSecure(): boolean {
    return this.inner._isSecure();
  }

  // Subchannels are shared between channels with equal credentials; closing
  // this client must never stop another client's connects.
  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(...args: Parameters<grpc.ChannelCredentials["_createSecureConnector"]>): SecureConnector {
    const inner = this.inner._createSecureConnector(...args);
    const refuse = () => Promise.reject(new Error("the client is closed"));
    return {
      waitForReady: () => (this.closed ? refuse() : inner.waitForReady()),
      connect: (socket) => {
        if (!this.closed) return inner.connect(socket);
        socket.destroy();
        return refuse();
      },
      getCallCredentials: () => inner.getCallCredentials(),
      destroy: () => inner.destroy(),
    };
  }
}

/**
 * Starts a grpc-js call with no stack trace captured. grpc-js records one (`new
 * Error()`) at the start of every call, only to append "for call at …" to the error
 * of a call that fails; that capture was 4% of the API server's CPU while it served
 * 4 KiB reads at 64 in flight (about 2,800 calls/s). Failed calls here surface as
 * RpcError with the method and the agent's message, which do not need it.
 */
function withoutCallerStack<T>(start: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return start();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** A typed client over one grpc-js channel for any protobuf-es service. */
export class RpcClient {
  readonly raw: grpc.Client;
  private readonly credentials: ClosableCredentials;

  constructor(address: string, credentials = grpc.credentials.createInsecure(), options: grpc.ChannelOptions = {}) {
    this.credentials = new ClosableCredentials(credentials);
    this.raw = new grpc.Client(address, this.credentials, { ...defaultChannelOptions, ...options });
  }

  unary<M extends UnaryMethod>(method: M, input: MessageInitShape<M["input"]>, opts?: CallOptions): Promise<MessageShape<M["output"]>> {
    return new Promise((resolve, reject) => {
      // The timeout is a local timer that cancels the call rather than a grpc-js
      // deadline: grpc-js deadlines cost about 0.4 ms a call, a third of a
      // small ReadFile round trip.
      let timer: NodeJS.Timeout | undefined;
      let timedOut = false;
      const call = withoutCallerStack(() =>
        this.raw.makeUnaryRequest(
          methodPath(method),
          serializer<M["input"]>(method.input),
          deserializer<M["output"]>(method.output),
          input,
          toMetadata(opts?.metadata),
          {},
          (err: grpc.ServiceError | null, res?: MessageShape<M["output"]>) => {
            if (timer) clearTimeout(timer);
            if (timedOut) reject(new RpcError(Status.DEADLINE_EXCEEDED, `${method.name}: no answer within ${opts?.timeoutMs} ms`));
            else if (err) reject(fromServiceError(err));
            else resolve(res as MessageShape<M["output"]>);
          },
        ),
      );
      if (opts?.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          call.cancel();
        }, opts.timeoutMs);
      }
      bindSignal(call, opts?.signal);
    });
  }

  serverStream<M extends ServerStreamMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
    opts?: CallOptions,
  ): grpc.ClientReadableStream<MessageShape<M["output"]>> {
    const call = withoutCallerStack(() =>
      this.raw.makeServerStreamRequest(
        methodPath(method),
        serializer<M["input"]>(method.input),
        deserializer<M["output"]>(method.output),
        input,
        toMetadata(opts?.metadata),
        toCallOptions(opts),
      ),
    );
    bindSignal(call, opts?.signal);
    return call;
  }

  clientStream<M extends ClientStreamMethod>(
    method: M,
    opts?: CallOptions,
  ): { call: grpc.ClientWritableStream<MessageInitShape<M["input"]>>; response: Promise<MessageShape<M["output"]>> } {
    let call!: grpc.ClientWritableStream<MessageInitShape<M["input"]>>;
    const response = new Promise<MessageShape<M["output"]>>((resolve, reject) => {
      call = withoutCallerStack(() =>
        this.raw.makeClientStreamRequest(
          methodPath(method),
          serializer<M["input"]>(method.input),
          deserializer<M["output"]>(method.output),
          toMetadata(opts?.metadata),
          toCallOptions(opts),
          (err: grpc.ServiceError | null, res?: MessageShape<M["output"]>) => {
            if (err) reject(fromServiceError(err));
            else resolve(res as MessageShape<M["output"]>);
          },
        ),
      );
    });
    bindSignal(call, opts?.signal);
    return { call, response };
  }

  bidi<M extends BidiMethod>(
    method: M,
    opts?: CallOptions,
  ): grpc.ClientDuplexStream<MessageInitShape<M["input"]>, MessageShape<M["output"]>> {
    const call = withoutCallerStack(() =>
      this.raw.makeBidiStreamRequest(
        methodPath(method),
        serializer<M["input"]>(method.input),
        deserializer<M["output"]>(method.output),
        toMetadata(opts?.metadata),
        toCallOptions(opts),
      ),
    );
    bindSignal(call, opts?.signal);
    return call;
  }

  /** Resolves once the channel is connected, or rejects after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.raw.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Closes the channel; from now on it makes no connection attempt, not even one grpc-js had scheduled. */
  close(): void {
    this.credentials.close();
    this.raw.close();
  }
}
