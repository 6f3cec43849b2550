// Bytes that arrived in chunks, read off the front in pieces of known length: the
// HTTP/2 frame reader (h2-connection.ts) and the gRPC message reader (grpc-frames.ts)
// both gather their units from socket chunks this way.

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Bytes queued. */
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first `n` bytes (at least `n` must be queued) without taking them: the first chunk itself when it holds them, else a copy. */
  peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (const b of this.chunks) {
      const part = Math.min(b.length, n - at);
      b.copy(out, at, 0, part);
      at += part;
      if (at === n) break;
    }
    return out;
  }

  /** Takes the next `n` bytes (at least `n` must be queued): a view when they lie in one chunk (the common case), else a copy. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.length -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const b = this.chunks[0]!;
      const part = Math.min(b.length, n - at);
      b.copy(out, at, 0, part);
      at += part;
      if (part === b.length) this.chunks.shift();
      else this.chunks[0] = b.subarray(part);
    }
    return out;
  }
}
