// The gRPC framing of the host's hand-framed bridge calls (h2-calls.ts): requests
// framed, responses split into their length-prefixed messages, and statuses read from
// trailers, as the gRPC over HTTP/2 protocol defines them.
import { create, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { RpcError, Status, type StatusCode } from "../../proto/rpc.js";
import { GRPC_PREFIX_BYTES } from "../../proto/wire.js";
import { ByteQueue } from "./byte-queue.js";

/** The HTTP status of a reply that is not gRPC, as the gRPC spec maps it. */
export function codeOfHttpStatus(status: number): StatusCode {
  switch (status) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

/**
 * grpc-message is percent-encoded UTF-8 (the gRPC spec). Decoded leniently, as
 * grpc-js does: a "%" not followed by two hex digits stays as it came.
 */
export function decodeGrpcMessage(raw: unknown): string {
  const text = Array.isArray(raw) ? String(raw[0]) : raw === undefined ? "" : String(raw);
  if (!text.includes("%")) return text;
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const hex = text[i] === "%" ? text.slice(i + 1, i + 3) : "";
    if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(text[i]!, "utf8")) bytes.push(b);
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

/** The gRPC status a trailer block (or a trailers-only reply) carries, or undefined when it carries none. */
export function statusOf(headers: Readonly<Record<string, string | string[] | undefined>>): RpcError | null | undefined {
  const raw = headers["grpc-status"];
  if (raw === undefined) return undefined;
  const text = Array.isArray(raw) ? raw[0] : raw;
  const code = /^\d{1,2}$/.test(text) ? Number(text) : NaN;
  if (!(code >= 0 && code <= 16)) return new RpcError(Status.UNKNOWN, `the agent sent an unknown grpc-status ${JSON.stringify(text)}`);
  if (code === Status.OK) return null;
  return new RpcError(code as StatusCode, decodeGrpcMessage(headers["grpc-message"]));
}

/** Splits the bytes of a response into its length-prefixed messages, refusing compressed or oversized ones. */
export class MessageReader {
  private readonly pending = new ByteQueue();
  /** The length of the message being gathered, or -1 while its prefix is incomplete. */
  private need = -1;

  constructor(private readonly maxBytes: number) {}

  /** The messages completed by `chunk`, in order. Throws RpcError on a prefix the client cannot accept. */
  push(chunk: Buffer, out: Buffer[]): void {
    this.pending.push(chunk);
    for (;;) {
      if (this.need < 0) {
        if (this.pending.length < GRPC_PREFIX_BYTES) return;
        const head = this.pending.take(GRPC_PREFIX_BYTES);
        if (head[0] !== 0) throw new RpcError(Status.INTERNAL, `the agent sent a message with flags ${head[0]} (compression was not negotiated)`);
        const length = head.readUInt32BE(1);
        if (length > this.maxBytes) throw new RpcError(Status.RESOURCE_EXHAUSTED, `Received message larger than max (${length} vs. ${this.maxBytes})`);
        this.need = length;
      }
      if (this.pending.length < this.need) return;
      // One message within one chunk (the common case) is a view, no copy; an empty one is a prefix alone.
      out.push(this.pending.take(this.need));
      this.need = -1;
    }
  }

  /** Whether a message was begun and not completed. */
  get partial(): boolean {
    return this.pending.length > 0 || this.need >= 0;
  }
}

export function encodeRequest<D extends DescMessage>(schema: D, input: MessageInitShape<D>, maxBytes: number): Buffer {
  const body = toBinary(schema, create(schema, input));
  if (body.length > maxBytes) throw new RpcError(Status.RESOURCE_EXHAUSTED, `Sent message larger than max (${body.length} vs. ${maxBytes})`);
  const frame = Buffer.allocUnsafe(GRPC_PREFIX_BYTES + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, GRPC_PREFIX_BYTES);
  return frame;
}
