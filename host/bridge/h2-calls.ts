// Unary and server-streaming calls to a bridge agent over node:http2 directly,
// framing the gRPC messages here instead of in grpc-js.
//
// Why hand-written: a small call (ReadFile of 4 KiB) cost the grpc-js client
// 212 µs of CPU against 97 µs for the same call framed here over node:http2
// (10 of 10 paired rounds, 3,541 vs 4,864 calls/s from one process), and receiving
// ReadRaw cost grpc-js 650–800 ms of CPU per GiB against 430–520 ms. On 2 cores
// the API server shares the machine with the agent and its clients, so that CPU
// is requests per second (BENCHMARKS.md, "Where the 64-in-flight rate goes").
//
// Only what the bridge needs: a unix socket (the pinned /proc/self/fd path,
// socket.ts), no TLS, no compression, no retries, no name resolution. The agent
// still serves with grpc-js; this speaks the same wire protocol (gRPC over HTTP/2:
// a HEADERS frame, length-prefixed messages, the status in trailers) and maps
// failures to the codes grpc-js gives: UNAVAILABLE when nothing answers,
// CANCELLED/DEADLINE_EXCEEDED for our own cancellations, INTERNAL for a reply that
// breaks the protocol. Client-streaming and bidi calls (WriteRaw, Exec, McpStdio)
// stay on grpc-js, whose channel also tells the pool whether the agent is alive.
import http2 from "node:http2";
import net from "node:net";
import { fromBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { MAX_MESSAGE_BYTES } from "../../proto/constants.js";
import { RpcError, Status, type CallOptions } from "../../proto/rpc.js";
import { codeOfHttpStatus, encodeRequest, MessageReader, statusOf } from "./grpc-frames.js";

const {
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
} = http2.constants;

/**
 * The receive window of every stream and of the connection. HTTP/2's default
 * 64 KiB makes a stream of 64 KiB messages wait for a WINDOW_UPDATE round trip per
 * message; 4 MiB made ReadRaw between two processes about 1.5x faster (the same
 * setting as the grpc-js channels, proto/rpc.ts).
 */
const WINDOW_BYTES = 4 * 1024 * 1024;

type UnaryMethod = DescMethod & { methodKind: "unary" };
type ServerStreamMethod = DescMethod & { methodKind: "server_streaming" };

/** One call in flight: its stream, its messages as they complete, and how it ended. */
class Call {
  /** Set once: the call's outcome (null = OK). Local cancellations set it before the stream closes. */
  private outcome: RpcError | null | undefined;
  private readonly reader: MessageReader;
  private readonly messages: Buffer[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private gotHeaders = false;
  private streamError: Error | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly unbindSignal: (() => void) | undefined;

  constructor(
    private readonly session: http2.ClientHttp2Session,
    private readonly stream: http2.ClientHttp2Stream,
    private readonly method: DescMethod,
    opts: CallOptions | undefined,
    maxBytes: number,
    private readonly onClose: () => void,
  ) {
    this.reader = new MessageReader(maxBytes);
    stream.on("response", (headers) => {
      this.gotHeaders = true;
      const status = Number(headers[":status"]);
      if (status !== 200) {
        this.fail(new RpcError(codeOfHttpStatus(status), `the agent answered HTTP ${status}`));
        return;
      }
      const type = String(headers["content-type"] ?? "");
      if (!type.startsWith("application/grpc")) {
        this.fail(new RpcError(Status.UNKNOWN, `the agent answered with content-type ${JSON.stringify(type)}`));
        return;
      }
      // Trailers-only: the status comes with the headers.
      const s = statusOf(headers);
      if (s !== undefined) this.settle(s);
    });
    stream.on("trailers", (trailers) => {
      const s = statusOf(trailers);
      this.settle(s === undefined ? new RpcError(Status.UNKNOWN, "the agent ended the call without a status") : s);
    });
    stream.on("data", (chunk: Buffer) => {
      // The trailers (an OK status) may come while data still waits in a paused stream: that data is read all the same.
      if (this.outcome) return;
      try {
        this.reader.push(chunk, this.messages);
      } catch (err) {
        // A broken message fails the call even after an OK status: the stream is not whole.
        if (this.outcome === null) this.outcome = undefined;
        this.fail(err as RpcError);
        return;
      }
      this.notify();
    });
    stream.on("error", (err) => {
      this.streamError ??= err;
    });
    stream.on("close", () => {
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.unbindSignal?.();
      if (this.outcome === undefined) this.outcome = this.closedWithout();
      else if (this.outcome === null && this.reader.partial) this.outcome = new RpcError(Status.INTERNAL, `${method.name}: the agent ended the call within a message`);
      this.onClose();
      this.notify();
    });
    if (opts?.timeoutMs !== undefined) {
      this.timer = setTimeout(() => this.fail(new RpcError(Status.DEADLINE_EXCEEDED, `${method.name}: no answer within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    }
    const signal = opts?.signal;
    if (signal) {
      const abort = () => this.fail(new RpcError(Status.CANCELLED, `${method.name}: cancelled`));
      if (signal.aborted) abort();
      else {
        signal.addEventListener("abort", abort, { once: true });
        this.unbindSignal = () => signal.removeEventListener("abort", abort);
      }
    }
  }

  /** The status of a stream that closed without one. */
  private closedWithout(): RpcError {
    const rst = this.stream.rstCode;
    const why = this.streamError?.message ?? `stream reset with HTTP/2 code ${rst}`;
    if (rst !== NGHTTP2_REFUSED_STREAM && ((!this.gotHeaders && this.streamError) || this.session.destroyed)) {
      // The connection failed or closed before the call ended: nobody is listening, or the agent went away.
      const cause = this.streamError ?? `the connection closed (HTTP/2 code ${rst})`;
      return new RpcError(Status.UNAVAILABLE, `${this.method.name}: the agent is unavailable: ${typeof cause === "string" ? cause : cause.message}`, { cause });
    }
    switch (rst) {
      case NGHTTP2_REFUSED_STREAM:
        return new RpcError(Status.UNAVAILABLE, `${this.method.name}: the agent refused the call (${why})`);
      case NGHTTP2_CANCEL:
        return new RpcError(Status.CANCELLED, `${this.method.name}: the agent cancelled the call`);
      case NGHTTP2_ENHANCE_YOUR_CALM:
        return new RpcError(Status.RESOURCE_EXHAUSTED, `${this.method.name}: the agent asked to slow down (${why})`);
      case NGHTTP2_INADEQUATE_SECURITY:
        return new RpcError(Status.PERMISSION_DENIED, `${this.method.name}: ${why}`);
      default:
        return new RpcError(Status.INTERNAL, `${this.method.name}: the call ended without a status (${why})`);
    }
  }

  /**
   * The agent refused the stream before it saw the request (REFUSED_STREAM, e.g. one sent
   * as the agent closed an idle connection with GOAWAY): running it again is safe.
   */
  get refused(): boolean {
    return this.closed && !this.gotHeaders && this.stream.rstCode === NGHTTP2_REFUSED_STREAM;
  }

  private settle(outcome: RpcError | null): void {
    if (this.outcome === undefined) this.outcome = outcome;
  }

  /** Ends the call here with `err` and resets the stream (the agent sees CANCEL). */
  fail(err: RpcError): void {
    if (this.outcome !== undefined) return;
    this.outcome = err;
    if (!this.closed) this.stream.close(NGHTTP2_CANCEL);
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /** The next message, or undefined after the last one of a call that ended OK; throws the call's error. */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      if (this.outcome) throw this.outcome;
      const msg = this.messages.shift();
      if (msg !== undefined) {
        // Backpressure: stop reading from the agent while messages wait here.
        if (this.messages.length > 4 && !this.stream.isPaused()) this.stream.pause();
        return msg;
      }
      if (this.closed) return undefined;
      if (this.stream.isPaused()) this.stream.resume();
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  /** Cancels a call whose caller stopped reading. */
  cancel(): void {
    if (!this.closed && this.outcome === undefined) this.fail(new RpcError(Status.CANCELLED, `${this.method.name}: cancelled`));
  }
}

/** Calls over one HTTP/2 connection to a unix socket, reconnected on the next call after it closed. */
export class H2Calls {
  private session: http2.ClientHttp2Session | undefined;
  private active = 0;
  private closed = false;

  constructor(
    private readonly socketPath: string,
    private readonly maxMessageBytes = MAX_MESSAGE_BYTES,
  ) {}

  private connection(): http2.ClientHttp2Session {
    const current = this.session;
    if (current && !current.closed && !current.destroyed) return current;
    const session = http2.connect("http://localhost", {
      createConnection: () => net.connect(this.socketPath),
      settings: { enablePush: false, initialWindowSize: WINDOW_BYTES },
    });
    session.on("connect", () => {
      try {
        session.setLocalWindowSize(WINDOW_BYTES);
      } catch {
        // A session already closing keeps the default window.
      }
    });
    // Its streams report the failure; the session's own error event must not crash the process.
    session.on("error", () => {});
    const forget = () => {
      if (this.session === session) this.session = undefined;
    };
    session.on("goaway", forget);
    session.on("close", forget);
    // Only calls in flight keep the process alive (ref'd in start()).
    if (this.active === 0) session.unref();
    this.session = session;
    return session;
  }

  private start(method: DescMethod, input: MessageInitShape<DescMessage>, opts: CallOptions | undefined): Call {
    if (this.closed) throw new RpcError(Status.UNAVAILABLE, `${method.name}: the client is closed`);
    const frame = encodeRequest(method.input, input, this.maxMessageBytes);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": `/${method.parent.typeName}/${method.name}`,
      "content-type": "application/grpc",
      te: "trailers",
    };
    if (opts?.metadata) for (const [k, v] of Object.entries(opts.metadata)) headers[k.toLowerCase()] = v;
    let session: http2.ClientHttp2Session;
    let stream: http2.ClientHttp2Stream;
    try {
      session = this.connection();
      stream = session.request(headers, { endStream: false });
    } catch (err) {
      throw new RpcError(Status.UNAVAILABLE, `${method.name}: the agent is unavailable: ${(err as Error).message}`, { cause: err });
    }
    if (this.active++ === 0) session.ref();
    const call = new Call(session, stream, method, opts, this.maxMessageBytes, () => {
      if (--this.active === 0 && !session.destroyed) session.unref();
    });
    stream.end(frame);
    return call;
  }

  /**
   * Starts a call and waits for its first message; a call the agent refused unseen is
   * started once more on a fresh connection, as grpc-js's transparent retry does.
   */
  private async begin(method: DescMethod, input: MessageInitShape<DescMessage>, opts: CallOptions | undefined): Promise<{ call: Call; first: Buffer | undefined }> {
    for (let attempt = 1; ; attempt++) {
      const call = this.start(method, input, opts);
      try {
        return { call, first: await call.next() };
      } catch (err) {
        if (attempt === 1 && call.refused && !this.closed) continue;
        throw err;
      }
    }
  }

  async unary<M extends UnaryMethod>(method: M, input: MessageInitShape<M["input"]>, opts?: CallOptions): Promise<MessageShape<M["output"]>> {
    const { call, first } = await this.begin(method, input as MessageInitShape<DescMessage>, opts);
    if (first === undefined) throw new RpcError(Status.UNIMPLEMENTED, `${method.name}: the agent answered OK without a message`);
    const second = await call.next();
    if (second !== undefined) throw new RpcError(Status.UNIMPLEMENTED, `${method.name}: the agent answered with more than one message`);
    return fromBinary(method.output as M["output"], first);
  }

  /** The call's messages in order; ends after an OK status, throws the call's error otherwise. Breaking off cancels the call. */
  async *serverStream<M extends ServerStreamMethod>(method: M, input: MessageInitShape<M["input"]>, opts?: CallOptions): AsyncGenerator<MessageShape<M["output"]>> {
    const { call, first } = await this.begin(method, input as MessageInitShape<DescMessage>, opts);
    try {
      for (let msg = first; msg !== undefined; msg = await call.next()) yield fromBinary(method.output as M["output"], msg);
    } finally {
      call.cancel();
    }
  }

  /** Closes the connection once its calls are done; later calls fail with UNAVAILABLE. */
  close(): void {
    this.closed = true;
    const session = this.session;
    this.session = undefined;
    session?.close();
  }
}
