// Unary and server-streaming calls to a bridge agent, framing the gRPC messages here
// instead of in grpc-js, over the host's own HTTP/2 connection (h2-connection.ts).
//
// Why hand-written: a small call (ReadFile of 4 KiB) cost the grpc-js client
// 212 µs of CPU against 97 µs for the same call framed here over node:http2
// (10 of 10 paired rounds, 3,541 vs 4,864 calls/s from one process), and receiving
// ReadRaw cost grpc-js 650–800 ms of CPU per GiB against 430–520 ms. On 2 cores
// the API server shares the machine with the agent and its clients, so that CPU
// is requests per second (BENCHMARKS.md, "Where the 64-in-flight rate goes"). Why
// not node:http2 underneath either: see h2-connection.ts.
//
// Only what the bridge needs: a unix socket (the pinned /proc/self/fd path,
// socket.ts), no TLS, no compression, no retries, no name resolution. The agent
// still serves with grpc-js; this speaks the same wire protocol (gRPC over HTTP/2:
// a HEADERS frame, length-prefixed messages, the status in trailers) and maps
// failures to the codes grpc-js gives: UNAVAILABLE when nothing answers or the
// connection is lost, CANCELLED/DEADLINE_EXCEEDED for our own cancellations,
// INTERNAL for a reply that breaks the protocol. Client-streaming and bidi calls
// (WriteRaw, Exec, McpStdio) stay on grpc-js, whose channel also tells the pool
// whether the agent is alive.
import net from "node:net";
import { fromBinary, type DescMessage, type DescMethod, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { MAX_MESSAGE_BYTES } from "../../proto/constants.js";
import { RpcError, Status, type CallOptions } from "../../proto/rpc.js";
import { codeOfHttpStatus, encodeRequest, MessageReader, statusOf } from "./grpc-frames.js";
import { H2_CODE, H2Connection, type H2Stream, type HeaderFields, type StreamEnd, type StreamListener } from "./h2-connection.js";

/**
 * The receive window of every stream and of the connection. HTTP/2's default
 * 64 KiB makes a stream of 64 KiB messages wait for a WINDOW_UPDATE round trip per
 * message; 4 MiB made ReadRaw between two processes about 1.5x faster (the same
 * setting as the grpc-js channels, proto/rpc.ts).
 */
const WINDOW_BYTES = 4 * 1024 * 1024;

type UnaryMethod = DescMethod & { methodKind: "unary" };
type ServerStreamMethod = DescMethod & { methodKind: "server_streaming" };

/** One call in flight: its stream's events, its messages as they complete, and how it ended. */
class Call implements StreamListener {
  /** Set once: the call's outcome (null = OK). Local cancellations set it before the stream closes. */
  private outcome: RpcError | null | undefined;
  private readonly reader: MessageReader;
  private readonly messages: Buffer[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  private gotHeaders = false;
  private end: StreamEnd | undefined;
  private stream: H2Stream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private unbindSignal: (() => void) | undefined;

  constructor(
    private readonly method: DescMethod,
    maxBytes: number,
    private readonly onClose: () => void,
  ) {
    this.reader = new MessageReader(maxBytes);
  }

  /** Starts the deadline and the abort signal once the stream exists. */
  attach(stream: H2Stream, opts: CallOptions | undefined): void {
    this.stream = stream;
    const name = this.method.name;
    if (opts?.timeoutMs !== undefined) {
      this.timer = setTimeout(() => this.fail(new RpcError(Status.DEADLINE_EXCEEDED, `${name}: no answer within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    }
    const signal = opts?.signal;
    if (signal) {
      const abort = () => this.fail(new RpcError(Status.CANCELLED, `${name}: cancelled`));
      if (signal.aborted) abort();
      else {
        signal.addEventListener("abort", abort, { once: true });
        this.unbindSignal = () => signal.removeEventListener("abort", abort);
      }
    }
  }

  headers(fields: HeaderFields, endStream: boolean): void {
    if (this.gotHeaders) {
      // Trailers.
      const s = statusOf(fields);
      this.settle(s === undefined ? new RpcError(Status.UNKNOWN, "the agent ended the call without a status") : s);
      return;
    }
    this.gotHeaders = true;
    const status = Number(fields[":status"]);
    if (status !== 200) {
      this.fail(new RpcError(codeOfHttpStatus(status), `the agent answered HTTP ${fields[":status"]}`));
      return;
    }
    const type = fields["content-type"] ?? "";
    if (!type.startsWith("application/grpc")) {
      this.fail(new RpcError(Status.UNKNOWN, `the agent answered with content-type ${JSON.stringify(type)}`));
      return;
    }
    // Trailers-only: the status comes with the headers.
    const s = statusOf(fields);
    if (s !== undefined) this.settle(s);
    else if (endStream) this.settle(new RpcError(Status.UNKNOWN, "the agent ended the call without a status"));
  }

  data(chunk: Buffer): void {
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
  }

  close(end: StreamEnd): void {
    this.closed = true;
    this.end = end;
    if (this.timer) clearTimeout(this.timer);
    this.unbindSignal?.();
    if (this.outcome === undefined) this.outcome = this.closedWithout(end);
    else if (this.outcome === null && this.reader.partial) this.outcome = new RpcError(Status.INTERNAL, `${this.method.name}: the agent ended the call within a message`);
    this.onClose();
    this.notify();
  }

  /** The status of a stream that closed without one. */
  private closedWithout(end: StreamEnd): RpcError {
    const name = this.method.name;
    if (end.kind === "lost") {
      // The connection failed or closed before the call ended: nobody is listening, or the agent went away.
      return new RpcError(Status.UNAVAILABLE, `${name}: the agent is unavailable: ${end.error.message}`, { cause: end.error });
    }
    if (end.kind === "done") return new RpcError(Status.INTERNAL, `${name}: the call ended without a status`);
    const why = `stream reset with HTTP/2 code ${end.code}`;
    switch (end.code) {
      case H2_CODE.REFUSED_STREAM:
        return new RpcError(Status.UNAVAILABLE, `${name}: the agent refused the call (${why})`);
      case H2_CODE.CANCEL:
        return new RpcError(Status.CANCELLED, `${name}: the agent cancelled the call`);
      case H2_CODE.ENHANCE_YOUR_CALM:
        return new RpcError(Status.RESOURCE_EXHAUSTED, `${name}: the agent asked to slow down (${why})`);
      case H2_CODE.INADEQUATE_SECURITY:
        return new RpcError(Status.PERMISSION_DENIED, `${name}: ${why}`);
      default:
        return new RpcError(Status.INTERNAL, `${name}: the call ended without a status (${why})`);
    }
  }

  /**
   * The agent refused the stream before it saw the request (REFUSED_STREAM, or a stream
   * above the last one a GOAWAY says was processed): running it again is safe.
   */
  get refused(): boolean {
    return this.closed && !this.gotHeaders && this.end?.kind === "reset" && this.end.code === H2_CODE.REFUSED_STREAM;
  }

  private settle(outcome: RpcError | null): void {
    if (this.outcome === undefined) this.outcome = outcome;
  }

  /** Ends the call here with `err` and resets the stream (the agent sees CANCEL). */
  fail(err: RpcError): void {
    if (this.outcome !== undefined) return;
    this.outcome = err;
    if (!this.closed) this.stream?.cancel(H2_CODE.CANCEL);
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
        if (this.messages.length > 4 && this.stream && !this.stream.isPaused) this.stream.pause();
        return msg;
      }
      if (this.closed) return undefined;
      if (this.stream?.isPaused) this.stream.resume();
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
  private conn: H2Connection | undefined;
  private active = 0;
  private closed = false;

  constructor(
    private readonly socketPath: string,
    private readonly maxMessageBytes = MAX_MESSAGE_BYTES,
  ) {}

  private connection(): H2Connection {
    const current = this.conn;
    if (current?.usable) return current;
    const conn = new H2Connection(net.connect(this.socketPath), {
      windowBytes: WINDOW_BYTES,
      onUnusable: () => {
        if (this.conn === conn) this.conn = undefined;
      },
    });
    // Only calls in flight keep the process alive (ref'd in start()).
    if (this.active === 0) conn.unref();
    this.conn = conn;
    return conn;
  }

  private start(method: DescMethod, input: MessageInitShape<DescMessage>, opts: CallOptions | undefined): Call {
    if (this.closed) throw new RpcError(Status.UNAVAILABLE, `${method.name}: the client is closed`);
    const frame = encodeRequest(method.input, input, this.maxMessageBytes);
    const fields: Array<[string, string]> = [
      [":method", "POST"],
      [":scheme", "http"],
      [":authority", "localhost"],
      [":path", `/${method.parent.typeName}/${method.name}`],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    if (opts?.metadata) for (const [k, v] of Object.entries(opts.metadata)) fields.push([k.toLowerCase(), v]);
    const conn = this.connection();
    const call = new Call(method, this.maxMessageBytes, () => {
      if (--this.active === 0) {
        conn.unref();
        this.conn?.unref();
      }
    });
    let stream: H2Stream;
    try {
      stream = conn.request(fields, frame, call);
    } catch (err) {
      throw new RpcError(Status.UNAVAILABLE, `${method.name}: the agent is unavailable: ${(err as Error).message}`, { cause: err });
    }
    if (this.active++ === 0) conn.ref();
    call.attach(stream, opts);
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
    const conn = this.conn;
    this.conn = undefined;
    conn?.close();
  }
}
