// A byte stream kept in a fixed-size file used as a ring: the last `capacity`
// bytes written stay readable by their offset in the stream (counted from the
// first byte ever written), older ones are overwritten.
import fs from "node:fs";

/** Where a ring keeps its bytes: positional reads and writes (a file, or memory in tests). */
export interface RingStorage {
  write(data: Uint8Array, position: number): void;
  read(into: Uint8Array, position: number): void;
  close(): void;
}

export class FileStorage implements RingStorage {
  private constructor(private readonly fd: number) {}

  /** Creates (or truncates) the file, readable by root only. */
  static create(file: string): FileStorage {
    return new FileStorage(fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600));
  }

  write(data: Uint8Array, position: number): void {
    let done = 0;
    while (done < data.byteLength) done += fs.writeSync(this.fd, data, done, data.byteLength - done, position + done);
  }

  read(into: Uint8Array, position: number): void {
    let done = 0;
    while (done < into.byteLength) {
      const n = fs.readSync(this.fd, into, done, into.byteLength - done, position + done);
      if (n === 0) {
        into.fill(0, done);
        return;
      }
      done += n;
    }
  }

  close(): void {
    try {
      fs.closeSync(this.fd);
    } catch {
      // Already closed.
    }
  }
}

export interface RingRead {
  data: Uint8Array;
  /** Offset of data in the stream. */
  offset: number;
  /** Bytes the ring no longer held between the requested offset and `offset`. */
  dropped: number;
}

export class Ring {
  /** Bytes written since the start. */
  total = 0;

  constructor(
    private readonly storage: RingStorage,
    readonly capacity: number,
  ) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError(`ring capacity must be a positive integer, not ${capacity}`);
  }

  /** The first offset still held. */
  get start(): number {
    return Math.max(0, this.total - this.capacity);
  }

  write(data: Uint8Array): void {
    let src = data;
    if (src.byteLength > this.capacity) {
      // Only the last `capacity` bytes can stay: skip the rest without writing it.
      this.total += src.byteLength - this.capacity;
      src = src.subarray(src.byteLength - this.capacity);
    }
    const pos = this.total % this.capacity;
    const first = Math.min(src.byteLength, this.capacity - pos);
    this.storage.write(src.subarray(0, first), pos);
    if (first < src.byteLength) this.storage.write(src.subarray(first), 0);
    this.total += src.byteLength;
  }

  /** Up to maxBytes from offset (bytes already overwritten are skipped and counted in `dropped`). */
  read(offset: number, maxBytes: number): RingRead {
    if (offset > this.total) throw new RangeError(`offset ${offset} is past the end of the stream (${this.total} bytes written)`);
    const from = Math.max(offset, this.start);
    const n = Math.max(0, Math.min(maxBytes, this.total - from));
    const data = new Uint8Array(n);
    const pos = from % this.capacity;
    const first = Math.min(n, this.capacity - pos);
    if (first > 0) this.storage.read(data.subarray(0, first), pos);
    if (first < n) this.storage.read(data.subarray(first), 0);
    return { data, offset: from, dropped: from - offset };
  }

  /** The last `bytes` bytes written (fewer when the ring holds fewer). */
  tail(bytes: number): RingRead {
    const from = Math.max(this.start, this.total - bytes);
    return this.read(from, this.total - from);
  }

  close(): void {
    this.storage.close();
  }
}
