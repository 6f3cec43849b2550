// A client HTTP/2 connection (RFC 9113) over one socket: the transport of the host's
// hand-framed bridge calls (h2-calls.ts).
//
// Why not node:http2: it hands the frames of a new stream to the socket only at the
// end of the event loop's turn (nghttp2's session is flushed from an "immediate").
// An API server that took 64 HTTP requests in one turn therefore sent the agent all 64
// calls at once after it had handled the last request, and the agent sat idle
// meanwhile: server and agent took turns on two cores instead of working at once.
// Here a call's frames are written when the call starts. Measured with the same agent,
// a bare node:http server relaying ReadFile 4 KiB at 64 in flight, three paired rounds:
// node:http2 3,605 / 2,801 / 1,992 requests/s, a first version of this connection
// 4,658 / 3,839 / 3,040; with it the API server's CPU per request fell from 255–292 µs
// to 126–185 µs and the idle share of the machine from 32–35% to 16–23%. In the whole
// benchmark the API went from 2,554 to 4,838 requests/s (BENCHMARKS.md, "An HTTP/2
// connection of our own").
//
// Only what a gRPC client over a unix socket needs: no TLS, no server push (refused in
// SETTINGS), no priorities. Flow control both ways, the peer's stream limit (calls
// beyond it wait here, as nghttp2 queues them), CONTINUATION, GOAWAY, PING. A peer that
// breaks the protocol gets GOAWAY and the connection ends; its streams are lost.
//
// One file: the frame reader, both directions of flow control, the stream table and
// the waiting queue all change the same connection state in the same turn; split
// apart, each part would reach into the others' fields.
import net from "node:net";
import { ByteQueue } from "./byte-queue.js";
import { HpackDecoder, HpackError, encodeHeaderBlock } from "./hpack.js";

/** HTTP/2 error codes (RFC 9113 section 7). */
export const H2_CODE = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
} as const;

const DATA = 0x0;
const HEADERS = 0x1;
const PRIORITY = 0x2;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const CONTINUATION = 0x9;

const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;

const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** The frame size this side accepts (the protocol's default; not raised in SETTINGS). */
const MAX_FRAME_IN = 16_384;
/** Largest header block (HEADERS and its CONTINUATIONs) accepted before decoding. */
const MAX_HEADER_BLOCK = 256 * 1024;
/** Streams opened before the peer's SETTINGS said its limit (RFC 9113 recommends no less than 100). */
const STREAMS_BEFORE_SETTINGS = 100;
const LAST_STREAM_ID = 2 ** 31 - 1;

export type HeaderFields = Record<string, string>;

/** How a stream ended: both sides finished, one side reset it, or the connection went. */
export type StreamEnd = { kind: "done" } | { kind: "reset"; code: number; byPeer: boolean } | { kind: "lost"; error: Error };

export interface StreamListener {
  /** A header block: the response's headers first, trailers later; endStream when the peer has finished. */
  headers(fields: HeaderFields, endStream: boolean): void;
  data(chunk: Buffer, endStream: boolean): void;
  /** Called once, last. */
  close(end: StreamEnd): void;
}

/** A protocol error of the connection: the peer gets GOAWAY with `code`. */
class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export class H2Stream {
  id = 0;
  /** DATA received and not yet returned to the peer as stream window (held while paused). */
  private unacked = 0;
  private paused = false;
  /** What the peer may still send on this stream. */
  recvWindow: number;
  sendWindow = 0;
  /** Request bytes waiting for flow-control window, sent with END_STREAM after the last. */
  readonly out: Buffer[] = [];
  localDone = false;
  remoteDone = false;
  /** A header block has arrived (DATA before one is malformed). */
  gotHeaders = false;
  closed = false;

  constructor(
    private readonly conn: H2Connection,
    readonly listener: StreamListener,
    readonly headerBlock: Buffer,
    body: Buffer,
    windowBytes: number,
  ) {
    this.recvWindow = windowBytes;
    if (body.length > 0) this.out.push(body);
  }

  /** Stops returning window to the peer: it may send what the window still allows, then waits. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.giveBack(0);
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Counts `n` received bytes and returns window when enough has been taken. */
  giveBack(n: number): void {
    this.unacked += n;
    if (this.paused || this.remoteDone || this.closed || this.unacked < this.conn.windowBytes / 4) return;
    this.conn.windowUpdate(this.id, this.unacked);
    this.recvWindow += this.unacked;
    this.unacked = 0;
  }

  /** Resets the stream (the peer sees `code`, CANCEL by default); the listener hears of it at once. */
  cancel(code: number = H2_CODE.CANCEL): void {
    this.conn.reset(this, code);
  }
}

export interface H2ConnectionOptions {
  /** The receive window of every stream and of the connection. */
  windowBytes: number;
  /** Called once when the connection can take no more streams (GOAWAY, failure, close). */
  onUnusable?: () => void;
  /** The last stream id this connection uses before the next call needs another (tests lower it). */
  lastStreamId?: number;
}

export class H2Connection {
  readonly windowBytes: number;
  private readonly socket: net.Socket;
  private readonly decoder = new HpackDecoder();
  private readonly streams = new Map<number, H2Stream>();
  /** Streams waiting for the peer's concurrency limit to let them open. */
  private readonly waiting: H2Stream[] = [];
  private nextId = 1;
  private peerMaxStreams = STREAMS_BEFORE_SETTINGS;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16_384;
  private sendWindow = DEFAULT_WINDOW;
  private recvWindow: number;
  private connUnacked = 0;
  private gotSettings = false;
  /** Highest stream id the peer said it will process (GOAWAY), or undefined. */
  private goawayLast: number | undefined;
  private draining = false;
  private destroyed = false;
  private unusableSaid = false;
  private readonly onUnusable: (() => void) | undefined;
  /** A header block being gathered from HEADERS and CONTINUATION frames. */
  private block: { id: number; endStream: boolean; parts: Buffer[]; bytes: number } | undefined;
  private readonly inbox = new ByteQueue();
  private readonly lastStreamId: number;

  constructor(socket: net.Socket, opts: H2ConnectionOptions) {
    this.socket = socket;
    this.windowBytes = opts.windowBytes;
    this.onUnusable = opts.onUnusable;
    this.lastStreamId = Math.min(opts.lastStreamId ?? LAST_STREAM_ID, LAST_STREAM_ID);
    socket.setNoDelay?.(true);
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
    settings.writeUInt32BE(opts.windowBytes, 8);
    const parts = [PREFACE, head(12, SETTINGS, 0, 0), settings];
    if (opts.windowBytes > DEFAULT_WINDOW) parts.push(windowUpdateFrame(0, opts.windowBytes - DEFAULT_WINDOW));
    this.recvWindow = Math.max(opts.windowBytes, DEFAULT_WINDOW);
    socket.write(Buffer.concat(parts));
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.lose(err));
    socket.on("close", () => this.lose(new Error("the connection closed")));
  }

  /** Whether a new stream may be started here. */
  get usable(): boolean {
    return !this.destroyed && !this.draining && this.goawayLast === undefined;
  }

  ref(): void {
    this.socket.ref();
  }

  unref(): void {
    this.socket.unref();
  }

  /**
   * Starts a request: its HEADERS (and the body's DATA, as far as flow control allows)
   * are written to the socket now, or when the peer's stream limit lets it open.
   */
  request(fields: ReadonlyArray<readonly [string, string]>, body: Buffer, listener: StreamListener): H2Stream {
    if (!this.usable) throw new Error("the connection is closing");
    const stream = new H2Stream(this, listener, encodeHeaderBlock(fields), body, this.windowBytes);
    if (this.streams.size >= this.peerMaxStreams) this.waiting.push(stream);
    else this.open(stream);
    return stream;
  }

  /** Ends the connection once its streams are done; no new streams. */
  close(): void {
    this.draining = true;
    this.sayUnusable();
    for (const s of this.waiting.splice(0)) this.finish(s, { kind: "reset", code: H2_CODE.REFUSED_STREAM, byPeer: false });
    if (this.streams.size === 0) this.end();
  }

  // ---------------------------------------------------------------- sending

  private open(stream: H2Stream): void {
    stream.id = this.nextId;
    this.nextId += 2;
    if (this.nextId > this.lastStreamId) {
      // Stream ids are spent: this connection finishes its streams, the next call opens another.
      this.draining = true;
      this.sayUnusable();
    }
    stream.sendWindow = this.peerInitialWindow;
    this.streams.set(stream.id, stream);
    const out: Buffer[] = [];
    const block = stream.headerBlock;
    const endStream = stream.out.length === 0;
    if (endStream) stream.localDone = true;
    for (let at = 0; at === 0 || at < block.length; at += this.peerMaxFrame) {
      const part = block.subarray(at, at + this.peerMaxFrame);
      const last = at + this.peerMaxFrame >= block.length;
      const type = at === 0 ? HEADERS : CONTINUATION;
      const flags = (last ? END_HEADERS : 0) | (at === 0 && endStream ? END_STREAM : 0);
      out.push(head(part.length, type, flags, stream.id), part);
    }
    this.sendData(stream, out);
    this.write(out);
  }

  /** Appends the DATA frames the windows allow to `out`; END_STREAM with the last byte. */
  private sendData(stream: H2Stream, out: Buffer[]): void {
    while (stream.out.length > 0) {
      const room = Math.min(stream.sendWindow, this.sendWindow, this.peerMaxFrame);
      const first = stream.out[0]!;
      if (room <= 0 && first.length > 0) return;
      const part = first.subarray(0, room);
      if (part.length === first.length) stream.out.shift();
      else stream.out[0] = first.subarray(part.length);
      stream.sendWindow -= part.length;
      this.sendWindow -= part.length;
      const last = stream.out.length === 0;
      if (last) stream.localDone = true;
      out.push(head(part.length, DATA, last ? END_STREAM : 0, stream.id), part);
    }
  }

  /** After the windows grew: sends what waited for them. */
  private flushWaitingData(): void {
    const out: Buffer[] = [];
    for (const stream of this.streams.values()) {
      if (stream.out.length > 0) this.sendData(stream, out);
      if (this.sendWindow <= 0) break;
    }
    this.write(out);
  }

  private write(parts: Buffer[]): void {
    if (this.destroyed || parts.length === 0) return;
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    if (bytes <= 64 * 1024) {
      this.socket.write(parts.length === 1 ? parts[0]! : Buffer.concat(parts, bytes));
      return;
    }
    // Large bodies go as views, gathered into one writev.
    this.socket.cork();
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  windowUpdate(id: number, increment: number): void {
    this.write([windowUpdateFrame(id, increment)]);
  }

  reset(stream: H2Stream, code: number): void {
    if (stream.closed) return;
    const queued = this.waiting.indexOf(stream);
    if (queued >= 0) this.waiting.splice(queued, 1);
    else {
      const payload = Buffer.alloc(4);
      payload.writeUInt32BE(code);
      this.write([head(4, RST_STREAM, 0, stream.id), payload]);
    }
    this.finish(stream, { kind: "reset", code, byPeer: false });
  }

  // ---------------------------------------------------------------- receiving

  private onData(chunk: Buffer): void {
    if (this.destroyed) return;
    this.inbox.push(chunk);
    try {
      while (this.inbox.length >= 9 && !this.destroyed) {
        const h = this.inbox.peek(9);
        const length = h.readUIntBE(0, 3);
        if (length > MAX_FRAME_IN) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, `a frame of ${length} bytes (at most ${MAX_FRAME_IN})`);
        if (this.inbox.length < 9 + length) return;
        const type = h[3]!;
        const flags = h[4]!;
        const id = h.readUInt32BE(5) & 0x7fffffff;
        this.inbox.take(9);
        this.onFrame(type, flags, id, this.inbox.take(length));
      }
    } catch (err) {
      if (err instanceof ConnectionError) this.abort(err.code, err);
      else if (err instanceof HpackError) this.abort(H2_CODE.COMPRESSION_ERROR, err);
      else this.abort(H2_CODE.INTERNAL_ERROR, err as Error);
    }
  }

  private onFrame(type: number, flags: number, id: number, payload: Buffer): void {
    if (!this.gotSettings && type !== SETTINGS) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "the peer did not begin with SETTINGS (is it HTTP/2?)");
    if (this.block !== undefined && type !== CONTINUATION) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "a header block was interrupted");
    switch (type) {
      case DATA:
        return this.onDataFrame(flags, id, payload);
      case HEADERS:
        return this.onHeadersFrame(flags, id, payload);
      case CONTINUATION:
        return this.onContinuation(flags, id, payload);
      case RST_STREAM: {
        if (id === 0 || payload.length !== 4) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "a malformed RST_STREAM");
        this.checkNotIdle(id);
        const stream = this.streams.get(id);
        if (stream) this.finish(stream, { kind: "reset", code: payload.readUInt32BE(0), byPeer: true });
        return;
      }
      case SETTINGS:
        return this.onSettings(flags, id, payload);
      case PING:
        if (id !== 0 || payload.length !== 8) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "a malformed PING");
        if (!(flags & ACK)) this.write([head(8, PING, ACK, 0), Buffer.from(payload)]);
        return;
      case GOAWAY:
        if (id !== 0 || payload.length < 8) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "a malformed GOAWAY");
        return this.onGoaway(payload.readUInt32BE(0) & 0x7fffffff);
      case WINDOW_UPDATE:
        return this.onWindowUpdate(id, payload);
      case PUSH_PROMISE:
        throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "PUSH_PROMISE although push was disabled");
      case PRIORITY:
        if (payload.length !== 5) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, "a malformed PRIORITY");
        return;
      default:
        // Unknown frame types are ignored (RFC 9113 section 4.1).
        return;
    }
  }

  /** A frame on a stream this side never opened (an even id, or one not used yet) breaks the protocol. */
  private checkNotIdle(id: number): void {
    if (id % 2 === 0 || id >= this.nextId) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, `a frame on stream ${id}, which this client never opened`);
  }

  private unpad(flags: number, payload: Buffer, what: string): Buffer {
    if (!(flags & PADDED)) return payload;
    const pad = payload[0];
    if (pad === undefined || pad >= payload.length) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, `a ${what} frame with more padding than payload`);
    return payload.subarray(1, payload.length - pad);
  }

  private onDataFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "DATA on stream 0");
    this.checkNotIdle(id);
    // The whole frame (padding too) counts against the windows.
    this.recvWindow -= payload.length;
    if (this.recvWindow < 0) throw new ConnectionError(H2_CODE.FLOW_CONTROL_ERROR, "the peer sent past the connection's window");
    this.connUnacked += payload.length;
    if (this.connUnacked >= this.windowBytes / 4) {
      this.windowUpdate(0, this.connUnacked);
      this.recvWindow += this.connUnacked;
      this.connUnacked = 0;
    }
    const data = this.unpad(flags, payload, "DATA");
    const stream = this.streams.get(id);
    if (stream === undefined) return; // reset here already: its frames in flight are dropped
    if (stream.remoteDone) return this.reset(stream, H2_CODE.STREAM_CLOSED);
    // A response begins with its headers (RFC 9113 8.1).
    if (!stream.gotHeaders) return this.reset(stream, H2_CODE.PROTOCOL_ERROR);
    stream.recvWindow -= payload.length;
    if (stream.recvWindow < 0) return this.reset(stream, H2_CODE.FLOW_CONTROL_ERROR);
    const end = (flags & END_STREAM) !== 0;
    if (end) stream.remoteDone = true;
    if (data.length > 0 || end) stream.listener.data(data, end);
    if (!stream.closed) stream.giveBack(payload.length);
    if (end) this.maybeDone(stream);
  }

  private onHeadersFrame(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "HEADERS on stream 0");
    this.checkNotIdle(id);
    let p = this.unpad(flags, payload, "HEADERS");
    if (flags & PRIORITY_FLAG) {
      if (p.length < 5) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, "a HEADERS frame too short for its priority");
      p = p.subarray(5);
    }
    this.block = { id, endStream: (flags & END_STREAM) !== 0, parts: [p], bytes: p.length };
    if (flags & END_HEADERS) this.endBlock();
  }

  private onContinuation(flags: number, id: number, payload: Buffer): void {
    const block = this.block;
    if (block === undefined || block.id !== id) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "CONTINUATION without its HEADERS");
    block.parts.push(payload);
    block.bytes += payload.length;
    if (block.bytes > MAX_HEADER_BLOCK) throw new ConnectionError(H2_CODE.ENHANCE_YOUR_CALM, `a header block larger than ${MAX_HEADER_BLOCK} bytes`);
    if (flags & END_HEADERS) this.endBlock();
  }

  private endBlock(): void {
    const block = this.block!;
    this.block = undefined;
    // Decoded even for a stream reset here: the table must follow the peer's.
    const list = this.decoder.decode(block.parts.length === 1 ? block.parts[0]! : Buffer.concat(block.parts));
    const stream = this.streams.get(block.id);
    if (stream === undefined) return;
    if (stream.remoteDone) return this.reset(stream, H2_CODE.STREAM_CLOSED);
    stream.gotHeaders = true;
    const fields: HeaderFields = {};
    for (const [name, value] of list) if (!(name in fields)) fields[name] = value;
    if (block.endStream) stream.remoteDone = true;
    stream.listener.headers(fields, block.endStream);
    if (block.endStream) this.maybeDone(stream);
  }

  private onSettings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "SETTINGS on a stream");
    if (flags & ACK) {
      if (payload.length !== 0) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload");
      return;
    }
    if (payload.length % 6 !== 0) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, "a SETTINGS frame of a partial entry");
    if (!this.gotSettings) {
      this.gotSettings = true;
      // No limit until the peer names one.
      this.peerMaxStreams = Infinity;
    }
    let windowGrew = false;
    for (let at = 0; at < payload.length; at += 6) {
      const key = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (key === SETTINGS_MAX_CONCURRENT_STREAMS) this.peerMaxStreams = value;
      else if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new ConnectionError(H2_CODE.FLOW_CONTROL_ERROR, `an initial window of ${value}`);
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        for (const s of this.streams.values()) s.sendWindow += delta;
        windowGrew ||= delta > 0;
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < 16_384 || value > 16_777_215) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, `a maximum frame size of ${value}`);
        this.peerMaxFrame = value;
      } else if (key === SETTINGS_ENABLE_PUSH && value > 1) {
        throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, `ENABLE_PUSH ${value}`);
      }
      // SETTINGS_HEADER_TABLE_SIZE and the rest: this side never indexes what it sends.
    }
    this.write([head(0, SETTINGS, ACK, 0)]);
    this.openWaiting();
    if (windowGrew) this.flushWaitingData();
  }

  private onWindowUpdate(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new ConnectionError(H2_CODE.FRAME_SIZE_ERROR, "a malformed WINDOW_UPDATE");
    const increment = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (increment === 0) throw new ConnectionError(H2_CODE.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0");
      this.sendWindow += increment;
      if (this.sendWindow > MAX_WINDOW) throw new ConnectionError(H2_CODE.FLOW_CONTROL_ERROR, "the connection's window overflowed");
    } else {
      this.checkNotIdle(id);
      const stream = this.streams.get(id);
      if (stream === undefined) return;
      if (increment === 0) return this.reset(stream, H2_CODE.PROTOCOL_ERROR);
      stream.sendWindow += increment;
      if (stream.sendWindow > MAX_WINDOW) return this.reset(stream, H2_CODE.FLOW_CONTROL_ERROR);
    }
    this.flushWaitingData();
  }

  /** The peer's error code and debug data say why; what matters here is which streams it took. */
  private onGoaway(lastId: number): void {
    this.goawayLast = Math.min(lastId, this.goawayLast ?? lastId);
    this.sayUnusable();
    // Streams the peer will not process never reached it: refused, safe to start again.
    for (const s of [...this.streams.values()]) if (s.id > this.goawayLast) this.finish(s, { kind: "reset", code: H2_CODE.REFUSED_STREAM, byPeer: true });
    for (const s of this.waiting.splice(0)) this.finish(s, { kind: "reset", code: H2_CODE.REFUSED_STREAM, byPeer: true });
    if (this.streams.size === 0) this.end();
  }

  // ---------------------------------------------------------------- endings

  private maybeDone(stream: H2Stream): void {
    if (!stream.remoteDone || stream.closed) return;
    if (!stream.localDone) {
      // The peer answered before taking the whole request: the rest is not sent.
      this.reset(stream, H2_CODE.CANCEL);
      return;
    }
    this.finish(stream, { kind: "done" });
  }

  private finish(stream: H2Stream, end: StreamEnd): void {
    if (stream.closed) return;
    stream.closed = true;
    stream.out.length = 0;
    if (stream.id !== 0) this.streams.delete(stream.id);
    stream.listener.close(end);
    this.openWaiting();
    if ((this.draining || this.goawayLast !== undefined) && this.streams.size === 0 && this.waiting.length === 0) this.end();
  }

  private openWaiting(): void {
    while (this.waiting.length > 0 && this.streams.size < this.peerMaxStreams && this.usable) this.open(this.waiting.shift()!);
    // Streams still waiting on a connection that takes no more (its ids spent) never
    // reached the peer: refused, so their calls are made again on another connection.
    if (!this.usable) for (const s of this.waiting.splice(0)) this.finish(s, { kind: "reset", code: H2_CODE.REFUSED_STREAM, byPeer: false });
  }

  private sayUnusable(): void {
    if (this.unusableSaid) return;
    this.unusableSaid = true;
    this.onUnusable?.();
  }

  /** Closes the socket once what was written has gone out (the peer need not close its side). */
  private end(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.sayUnusable();
    this.socket.destroySoon();
  }

  /** A protocol error: GOAWAY with `code`, then every stream is lost. */
  private abort(code: number, err: Error): void {
    if (this.destroyed) return;
    const payload = Buffer.alloc(8);
    payload.writeUInt32BE(0, 0);
    payload.writeUInt32BE(code, 4);
    this.socket.write(Buffer.concat([head(8, GOAWAY, 0, 0), payload]));
    this.lose(new Error(`HTTP/2 protocol error: ${err.message}`));
  }

  /** The connection is gone: every stream ends as lost. */
  private lose(err: Error): void {
    this.destroyed = true;
    this.sayUnusable();
    for (const s of [...this.waiting.splice(0), ...this.streams.values()]) this.finish(s, { kind: "lost", error: err });
    this.socket.destroy();
  }
}

function head(length: number, type: number, flags: number, id: number): Buffer {
  const h = Buffer.allocUnsafe(9);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return h;
}

function windowUpdateFrame(id: number, increment: number): Buffer {
  const f = head(4, WINDOW_UPDATE, 0, id);
  return Buffer.concat([f, Buffer.from([(increment >>> 24) & 0x7f, (increment >>> 16) & 0xff, (increment >>> 8) & 0xff, increment & 0xff])]);
}
