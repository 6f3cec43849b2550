// The request/reply plumbing shared by the two process streams (Exec, McpStdio).
import type * as grpc from "@grpc/grpc-js";
import type { Readable } from "node:stream";
import { RpcError, Status, invalidArgument } from "../errors.js";

/** Something whose output can be held back while the client is slow. */
export interface Pausable {
  pause(): void;
  resume(): void;
}

/**
 * Makes a request stream read no message ahead of its consumer. grpc-js pulls
 * messages while its Readable holds fewer than highWaterMark of them (16 in
 * object mode), whether or not the stream is paused: up to 16 messages of
 * 16 MiB each would be taken off the connection and held in memory. With a
 * mark of 0 a paused call takes nothing more off the connection (at most the
 * one message already requested), so HTTP/2 flow control holds the rest back
 * at the client. Node has no public setter for the mark; the state field has
 * been stable since Node 10.
 */
export function noReadAhead(call: Readable): void {
  const state = (call as unknown as { _readableState?: { highWaterMark?: unknown } })._readableState;
  if (state && typeof state.highWaterMark === "number") state.highWaterMark = 0;
}

/**
 * Waits for a bidi call's first message, then leaves the call paused so that
 * nothing sent after it is lost before the caller attaches its own 'data'
 * listener and resumes.
 */
export function readFirstMessage<Req>(call: grpc.ServerDuplexStream<Req, unknown>, rpc: string): Promise<Req> {
  if (call.cancelled) return Promise.reject(new RpcError(Status.CANCELLED, `${rpc} cancelled by the client`));
  noReadAhead(call);
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      call.off("data", onData);
      call.off("end", onEnd);
      call.off("cancelled", onCancelled);
    };
    const onData = (msg: Req) => {
      cleanup();
      call.pause();
      resolve(msg);
    };
    const onEnd = () => {
      cleanup();
      reject(invalidArgument(`${rpc}: the request stream ended before the start message`));
    };
    const onCancelled = () => {
      cleanup();
      reject(new RpcError(Status.CANCELLED, `${rpc} cancelled by the client`));
    };
    call.on("data", onData);
    call.on("end", onEnd);
    call.on("cancelled", onCancelled);
  });
}

interface ReplyStream<Res> {
  write(msg: Res): boolean;
  once(event: "drain", listener: () => void): unknown;
}

/**
 * Replies with gRPC flow control: when the call's buffer is full, every
 * registered source (a child's stdout, a pty) is paused until 'drain', so a
 * slow client slows the process down instead of the agent buffering its output.
 */
export class Outbox<Res> {
  private readonly sources: Pausable[] = [];
  private waiting = false;
  private closed = false;

  constructor(private readonly call: ReplyStream<Res>) {}

  addSource(source: Pausable): void {
    this.sources.push(source);
    if (this.waiting) source.pause();
  }

  send(msg: Res): void {
    if (this.closed) return;
    if (this.call.write(msg) || this.waiting) return;
    this.waiting = true;
    for (const s of this.sources) s.pause();
    this.call.once("drain", () => {
      this.waiting = false;
      if (this.closed) return;
      for (const s of this.sources) s.resume();
    });
  }

  /** Nothing more is sent (the client has gone); sources are left as they are. */
  close(): void {
    this.closed = true;
  }
}
