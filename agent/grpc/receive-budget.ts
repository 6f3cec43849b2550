// Request messages under a byte budget, before they are received.
//
// grpc-js reads a request message whole before a handler sees it: each call's
// decoder collects the message's bytes as HTTP/2 lets them in, up to
// grpc.max_receive_message_length. Unbounded, 8 connections × 100 calls that
// each announce a 16 MiB WriteFile and send it slowly took an agent to 13 GiB.
//
// This interceptor reads each message's 5-byte gRPC prefix as the bytes arrive
// (a 'data' listener placed before grpc-js's own) and, for a message larger
// than RECEIVE_UNLEASED_MAX_BYTES, leases its announced length (times the cost
// of decoding it) from a ByteBudget before more of it is taken in. Without a
// lease the call's HTTP/2 stream is paused: the client is held by flow control
// (its window, 64 KiB, is all it can have sent), and it is refused with
// RESOURCE_EXHAUSTED when no lease comes in time. A lease is kept until the
// call ends for a unary call (the decoded request lives as long as its
// handler) and until the next message starts for a streaming one.
//
// grpc-js offers no public hook below its decoder; the call's HTTP/2 stream is
// the private `stream` field of its BaseServerInterceptingCall (grpc-js 1.10 –
// 1.14). If a grpc-js update moves it, requestStreamOf() finds nothing, the
// agent logs that once and serves unbounded, and the receive-budget tests fail.
import type http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { ByteBudget, type Lease } from "../budget.js";
import { logLine } from "../log.js";

/** Calls refused per turn of the event loop. */
const REFUSALS_PER_TURN = 16;

export interface ReceiveBudgetOptions {
  /** Messages up to this size are taken without a lease (HTTP/2's window bounds them per call). */
  unleasedMax: number;
  /** Bytes of memory one announced byte costs until the handler is done (the bytes and their decoded copy). */
  costFactor: number;
  /** Largest message grpc-js accepts; a larger one is refused by grpc-js itself, so not leased. */
  maxMessageBytes: number;
}

interface CallWithStream {
  stream?: http2.ServerHttp2Stream;
  nextCall?: CallWithStream;
}

/** The HTTP/2 stream under a chain of intercepting calls, if grpc-js keeps it where it did. */
function requestStreamOf(call: grpc.ServerInterceptingCallInterface): http2.ServerHttp2Stream | undefined {
  let c = call as unknown as CallWithStream | undefined;
  for (let depth = 0; c && depth < 16; depth++, c = c.nextCall) {
    const s = c.stream;
    if (s && typeof s.pause === "function" && typeof s.prependListener === "function") return s;
  }
  return undefined;
}

/**
 * A call whose reads wait while its next message waits for a lease. Everything
 * else goes straight to the call below: grpc-js's ServerInterceptingCall would
 * route each metadata, message and status through a responder and wrap the
 * listener, which cost the agent 5% of its small-call throughput (64 ReadFiles in
 * flight: 4,230 against 4,430 calls/s without the interceptor).
 */
class BudgetedCall extends grpc.ServerInterceptingCall {
  private readWanted = false;
  waitingForLease = false;

  constructor(private readonly inner: grpc.ServerInterceptingCallInterface) {
    super(inner);
  }

  override start(listener: Parameters<grpc.ServerInterceptingCallInterface["start"]>[0]): void {
    this.inner.start(listener);
  }
  override sendMetadata(metadata: grpc.Metadata): void {
    this.inner.sendMetadata(metadata);
  }
  override sendMessage(message: unknown, callback: () => void): void {
    this.inner.sendMessage(message, callback);
  }
  override sendStatus(status: Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0]): void {
    this.inner.sendStatus(status);
  }

  override startRead(): void {
    if (this.waitingForLease) this.readWanted = true;
    else this.inner.startRead();
  }

  /** The lease came: reading goes on where grpc-js wanted it to. */
  leased(stream: http2.ServerHttp2Stream): void {
    this.waitingForLease = false;
    stream.resume();
    if (this.readWanted) {
      this.readWanted = false;
      this.inner.startRead();
    }
  }
}

export function receiveBudgetInterceptor(budget: ByteBudget, options: ReceiveBudgetOptions): grpc.ServerInterceptor {
  let warned = false;
  // Refusals go out a few per turn of the event loop: hundreds of calls refused
  // together (the line of waiters full) would otherwise hold up every other call.
  const refusals: Array<() => void> = [];
  const refuseBatch = (): void => {
    for (const refuse of refusals.splice(0, REFUSALS_PER_TURN)) refuse();
    if (refusals.length > 0) setImmediate(refuseBatch);
  };
  const refuseSoon = (refuse: () => void): void => {
    refusals.push(refuse);
    if (refusals.length === 1) setImmediate(refuseBatch);
  };
  return (method, next) => {
    const call = new BudgetedCall(next);
    const stream = requestStreamOf(next);
    if (!stream) {
      if (!warned) {
        warned = true;
        logLine("grpc-js keeps its HTTP/2 stream elsewhere than expected: request messages are not under the receive budget");
      }
      return call;
    }
    const prefix = Buffer.alloc(5);
    let prefixHave = 0;
    let bodyLeft = 0;
    let lease: Lease | undefined;
    let ended = false;
    // Made only when a message has to wait: most calls never do.
    let ac: AbortController | undefined;

    const release = (): void => {
      lease?.release();
      lease = undefined;
    };
    const refuse = (err: Error): void =>
      refuseSoon(() => {
        if (ended) return;
        call.sendStatus({ code: grpc.status.RESOURCE_EXHAUSTED, details: err.message });
        // The rest of the request is not wanted: the client stops sending at once.
        if (!stream.destroyed) stream.close(0x8 /* NGHTTP2_CANCEL */);
      });
    const messageStarts = (bytes: number): void => {
      // A message over the unleased size cannot end within the HTTP/2 frame its prefix
      // came in (frames are at most 16 KiB), so none can start while one waits; should
      // it all the same, the call is refused rather than leased twice.
      if (call.waitingForLease) return refuse(new Error("a request message started while the one before waited for the receive budget"));
      // The previous message of a streaming call has been handed on.
      release();
      if (bytes <= options.unleasedMax || bytes > options.maxMessageBytes) return;
      const cost = bytes * options.costFactor;
      const now = budget.tryAcquire(cost);
      if (now) {
        lease = now;
        return;
      }
      call.waitingForLease = true;
      stream.pause();
      ac ??= new AbortController();
      const signal = ac.signal;
      budget.acquire(cost, `a request message of ${bytes} bytes (${method.path})`, signal).then(
        (l) => {
          if (ended) return l.release();
          lease = l;
          call.leased(stream);
        },
        (err: Error) => {
          if (!signal.aborted) refuse(err);
        },
      );
    };

    stream.prependListener("data", (chunk: Buffer) => {
      let i = 0;
      while (i < chunk.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, chunk.length - i);
          bodyLeft -= n;
          i += n;
          continue;
        }
        const n = Math.min(5 - prefixHave, chunk.length - i);
        chunk.copy(prefix, prefixHave, i, i + n);
        prefixHave += n;
        i += n;
        if (prefixHave === 5) {
          prefixHave = 0;
          bodyLeft = prefix.readUInt32BE(1);
          messageStarts(bodyLeft);
        }
      }
    });
    stream.once("close", () => {
      ended = true;
      ac?.abort();
      release();
    });
    return call;
  };
}
