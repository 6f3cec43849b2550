// containerd's content store: blobs written through the Content.Write bidi
// stream (STAT → WRITE chunks → COMMIT with the expected digest and size),
// resumed from the ingest's offset, verified while streaming.
import { createHash } from "node:crypto";
import type { FieldMask } from "@bufbuild/protobuf/wkt";
import {
  Content,
  WriteAction,
  type Info,
  type WriteContentResponse,
} from "../../proto/gen/containerd/services/content/v1/content_pb.js";
import { preEncoded } from "../../proto/rpc.js";
import { encodeFields } from "../../proto/wire.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isAlreadyExists, isNotFound, toContainerdError } from "./errors.js";

/** Bytes per WRITE message: few messages, yet small enough that pooled buffers are reused within a layer; well under the 16 MiB cap. */
const WRITE_CHUNK = 1024 * 1024;
/** WRITE messages sent before waiting for containerd's answers. */
const MAX_IN_FLIGHT = 8;

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

function toInfo(info: Info | undefined, digest: string): ContentInfo {
  if (!info) throw new ContainerdError("unknown", `containerd returned no info for ${digest}`);
  return { digest: info.digest, size: Number(info.size), labels: { ...info.labels } };
}

export async function contentInfo(conn: ContainerdConnection, digest: string, opts?: ContainerdCallOptions): Promise<ContentInfo | undefined> {
  try {
    const res = await conn.unary(Content.method.info, { digest }, opts);
    return toInfo(res.info, digest);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Sets (or, with value "", removes) labels on a blob; other labels stay as they are. */
export async function updateContentLabels(
  conn: ContainerdConnection,
  digest: string,
  labels: Record<string, string>,
  opts?: ContainerdCallOptions,
): Promise<ContentInfo> {
  const mask: Pick<FieldMask, "paths"> = { paths: Object.keys(labels).map((k) => `labels.${k}`) };
  const res = await conn.unary(Content.method.update, { info: { digest, labels }, updateMask: mask }, opts);
  return toInfo(res.info, digest);
}

export async function deleteContent(conn: ContainerdConnection, digest: string, opts?: ContainerdCallOptions): Promise<boolean> {
  try {
    await conn.unary(Content.method.delete, { digest }, opts);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Lists blobs; the whole listing has the connection's default deadline unless `opts.timeoutMs` says otherwise. */
export async function listContent(conn: ContainerdConnection, filters: string[] = [], opts?: ContainerdCallOptions): Promise<ContentInfo[]> {
  const out: ContentInfo[] = [];
  const stream = conn.listStream(Content.method.list, { filters }, opts);
  try {
    for await (const res of stream) for (const info of res.info) out.push(toInfo(info, info.digest));
  } catch (err) {
    throw conn.wrap(err, Content.method.list);
  }
  return out;
}

/**
 * Reads a whole blob (for small ones: manifests, configs). Fails with
 * "deadline_exceeded" when containerd sends nothing for the connection's
 * stream idle timeout (or `opts.idleTimeoutMs`).
 */
export async function readContent(conn: ContainerdConnection, digest: string, opts?: ContainerdCallOptions): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const stream = conn.serverStream(Content.method.read, { digest, offset: 0n, size: 0n }, opts);
  try {
    for await (const res of stream) chunks.push(Buffer.from(res.data.buffer, res.data.byteOffset, res.data.byteLength));
  } catch (err) {
    throw conn.wrap(err, Content.method.read);
  }
  return Buffer.concat(chunks);
}

export async function abortIngest(conn: ContainerdConnection, ref: string, opts?: ContainerdCallOptions): Promise<void> {
  try {
    await conn.unary(Content.method.abort, { ref }, opts);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/**
 * Buffers for WRITE messages, reused while any write runs: a fresh multi-MiB
 * buffer page-faults on every first touch, which made the copy into it cost
 * several times a copy into warm memory on this VM. Emptied when the last
 * write ends, so an idle host keeps nothing.
 */
const messagePool: Buffer[] = [];
const POOL_BUFFER_BYTES = WRITE_CHUNK + 512 * 1024;
let activeWrites = 0;

function takeBuffer(size: number): Buffer {
  if (size > POOL_BUFFER_BYTES) return Buffer.allocUnsafeSlow(size);
  return messagePool.pop() ?? Buffer.allocUnsafeSlow(POOL_BUFFER_BYTES);
}

function releaseBuffer(buf: Buffer): void {
  if (buf.length === POOL_BUFFER_BYTES && activeWrites > 0 && messagePool.length < MAX_IN_FLIGHT * 2) messagePool.push(buf);
}

/**
 * A WRITE request encoded by hand into `out`, the data copied once straight
 * from the received chunks (protobuf-es, or concatenating first, would copy it
 * twice more). Fields: action=1 (varint), ref=2, offset=5 (varint), data=6.
 */
function encodeWrite(ref: Buffer, offset: number, chunks: Buffer[], size: number): { message: Buffer; backing: Buffer } {
  const head = encodeFields([
    { field: 1, value: WriteAction.WRITE },
    { field: 2, value: ref },
    { field: 5, value: offset },
  ]);
  const lenBytes = encodeFields([{ field: 1, value: size }]).subarray(1); // the varint alone
  const total = head.length + 1 + lenBytes.length + size;
  const backing = takeBuffer(total);
  head.copy(backing, 0);
  let pos = head.length;
  backing[pos++] = (6 << 3) | 2;
  lenBytes.copy(backing, pos);
  pos += lenBytes.length;
  for (const c of chunks) {
    c.copy(backing, pos);
    pos += c.length;
  }
  return { message: backing.subarray(0, total), backing };
}

/** Where a blob's bytes come from; `from` is where the stream really starts (≤ offset). */
export type BlobSource = (offset: number) => Promise<{ from: number; chunks: AsyncIterable<Buffer> }>;

export interface WriteBlobOptions {
  /** Ingest ref: the same ref resumes an interrupted write. */
  ref: string;
  digest: string;
  size: number;
  /** Name for error messages ("layer 2 of …"). */
  name?: string;
  labels?: Record<string, string>;
  onProgress?: (offset: number, total: number) => void;
  /**
   * Longest wait for containerd: for its reply to a request, or for it to take
   * more data (default: the connection's streamIdleTimeoutMs, 60 s); 0: none.
   * Time spent reading `source` does not count. Then the write fails with
   * "deadline_exceeded"; the ingest keeps what it got, so a retry resumes.
   */
  idleTimeoutMs?: number;
  call?: ContainerdCallOptions;
}

export interface WriteBlobResult {
  /** True when the store already had the blob: nothing was transferred. */
  existed: boolean;
  /** Bytes sent to containerd by this call. */
  written: number;
  /** Offset the write resumed from. */
  resumedFrom: number;
}

function digestMismatch(name: string, expected: string, actual: string): ContainerdError {
  return new ContainerdError("digest_mismatch", `${name}: content has digest ${actual}, expected ${expected}: the registry served the wrong bytes`);
}

/**
 * Writes one blob with Content.Write. ALREADY_EXISTS on STAT means the store
 * has it (nothing is read from `source`); a nonzero STAT offset resumes the
 * ingest. The sha256 is computed while streaming and checked before COMMIT;
 * a resumed write is checked by containerd at COMMIT. On a digest mismatch the
 * ingest is aborted, so nothing partial stays behind.
 */
export async function writeBlob(conn: ContainerdConnection, source: BlobSource, opts: WriteBlobOptions): Promise<WriteBlobResult> {
  // Another writer (a concurrent pull of the same blob) holds the ingest ref: wait for it,
  // after which the blob usually exists and STAT answers ALREADY_EXISTS.
  const deadline = Date.now() + 10 * 60_000;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await writeBlobOnce(conn, source, opts);
    } catch (err) {
      if (!(err instanceof RefLockedError) || Date.now() > deadline) throw err instanceof RefLockedError ? err.cause : err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

class RefLockedError extends Error {}

async function writeBlobOnce(conn: ContainerdConnection, source: BlobSource, opts: WriteBlobOptions): Promise<WriteBlobResult> {
  activeWrites++;
  try {
    return await writeBlobStream(conn, source, opts);
  } finally {
    if (--activeWrites === 0) messagePool.length = 0;
  }
}

async function writeBlobStream(conn: ContainerdConnection, source: BlobSource, opts: WriteBlobOptions): Promise<WriteBlobResult> {
  const name = opts.name ?? `blob ${opts.digest}`;
  const idleMs = opts.idleTimeoutMs ?? conn.streamIdleTimeoutMs;
  const call = conn.bidi(Content.method.write, opts.call);
  const responses: WriteContentResponse[] = [];
  const waiters: Array<{ resolve: (r: WriteContentResponse) => void; reject: (e: unknown) => void }> = [];
  const drainWaiters = new Set<(e: unknown) => void>();
  let failed: ContainerdError | undefined;
  let ended = false;
  const failAll = (err: ContainerdError) => {
    failed ??= err;
    for (const w of waiters.splice(0)) w.reject(failed);
    for (const reject of [...drainWaiters]) reject(failed);
  };
  // Runs while at least one request waits for its reply; each reply starts a new window.
  let replyTimer: NodeJS.Timeout | undefined;
  const stopReplyTimer = () => {
    if (replyTimer) clearTimeout(replyTimer);
    replyTimer = undefined;
  };
  const startReplyTimer = () => {
    if (idleMs <= 0 || replyTimer || waiters.length === 0 || failed) return;
    replyTimer = setTimeout(() => {
      replyTimer = undefined;
      stall(`no reply from containerd for ${idleMs} ms`);
    }, idleMs);
  };
  const stall = (what: string) => {
    failAll(new ContainerdError("deadline_exceeded", `containerd Content.Write for ${name}: ${what}; is containerd hung?`));
    call.cancel();
  };
  call.on("data", (res: WriteContentResponse) => {
    stopReplyTimer();
    const w = waiters.shift();
    if (w) w.resolve(res);
    else responses.push(res);
    startReplyTimer();
  });
  call.on("error", (err: unknown) => {
    stopReplyTimer();
    failAll(conn.wrap(err, Content.method.write));
  });
  call.on("end", () => {
    stopReplyTimer();
    ended = true;
    const err = new ContainerdError("unknown", `containerd Content.Write for ${name}: stream ended early`);
    for (const w of waiters.splice(0)) w.reject(failed ?? err);
  });
  // One answer per request, in order; WRITE answers are drained by the caller in batches.
  const next = (): Promise<WriteContentResponse> => {
    const r = responses.shift();
    if (r) return Promise.resolve(r);
    if (failed) return Promise.reject(failed);
    if (ended) return Promise.reject(new ContainerdError("unknown", `containerd Content.Write for ${name}: stream ended early`));
    const reply = new Promise<WriteContentResponse>((resolve, reject) => waiters.push({ resolve, reject }));
    startReplyTimer();
    return reply;
  };
  const send = async (msg: Parameters<typeof call.write>[0], written?: () => void): Promise<void> => {
    if (failed) throw failed;
    // grpc-js has framed (copied) the message once the write's callback runs.
    if (!call.write(msg, written)) {
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          call.off("drain", onDrain);
          drainWaiters.delete(onFail);
          if (timer) clearTimeout(timer);
        };
        const onDrain = () => {
          done();
          resolve();
        };
        const onFail = (e: unknown) => {
          done();
          reject(e);
        };
        const timer = idleMs > 0 ? setTimeout(() => stall(`containerd took no data for ${idleMs} ms`), idleMs) : undefined;
        call.once("drain", onDrain);
        drainWaiters.add(onFail);
        if (failed) onFail(failed);
      });
    }
  };
  const refBytes = Buffer.from(opts.ref);

  try {
    let status: WriteContentResponse;
    try {
      await send({ action: WriteAction.STAT, ref: opts.ref, expected: opts.digest, total: BigInt(opts.size) });
      status = await next();
    } catch (err) {
      if (isAlreadyExists(err)) {
        opts.onProgress?.(opts.size, opts.size);
        return { existed: true, written: 0, resumedFrom: opts.size };
      }
      if (err instanceof ContainerdError && err.code === "unavailable" && /locked/.test(err.message)) throw new RefLockedError("ref locked", { cause: err });
      throw err;
    }
    let offset = Number(status.offset);
    if (offset > opts.size) offset = 0;
    const { from, chunks } = await source(offset);
    // The registry ignored the range: start over (WRITE at offset 0 truncates the ingest).
    offset = from;
    const resumedFrom = offset;
    const hash = offset === 0 ? createHash("sha256") : undefined;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let inFlight = 0;
    let written = 0;
    const flush = async () => {
      if (pendingBytes === 0) return;
      const size = pendingBytes;
      const { message, backing } = encodeWrite(refBytes, offset, pending, size);
      pending = [];
      pendingBytes = 0;
      await send(preEncoded(message), () => releaseBuffer(backing));
      // A first WRITE at offset 0 on an ingest holding bytes truncates it: what a restart wants.
      offset += size;
      written += size;
      inFlight++;
      if (inFlight >= MAX_IN_FLIGHT) {
        for (; inFlight > MAX_IN_FLIGHT / 2; inFlight--) await next();
      }
      opts.onProgress?.(offset, opts.size);
    };
    try {
      for await (const chunk of chunks) {
        hash?.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_CHUNK) await flush();
      }
    } catch (err) {
      // The source broke (a dropped download): hand containerd what arrived, so the
      // ingest keeps it and the next attempt resumes from there.
      await flush().catch(() => {});
      for (; inFlight > 0; inFlight--) await next().catch(() => {});
      throw err;
    }
    await flush();
    for (; inFlight > 0; inFlight--) await next();
    if (offset !== opts.size) {
      await abortIngest(conn, opts.ref, opts.call).catch(() => {});
      throw new ContainerdError("digest_mismatch", `${name}: got ${offset} bytes, expected ${opts.size}`);
    }
    if (hash) {
      const actual = `sha256:${hash.digest("hex")}`;
      if (actual !== opts.digest) {
        call.cancel();
        await abortIngest(conn, opts.ref, opts.call).catch(() => {});
        throw digestMismatch(name, opts.digest, actual);
      }
    }
    try {
      await send({ action: WriteAction.COMMIT, ref: opts.ref, expected: opts.digest, total: BigInt(opts.size), offset: BigInt(offset), labels: opts.labels ?? {} });
      await next();
    } catch (err) {
      if (isAlreadyExists(err)) return { existed: false, written, resumedFrom };
      const e = toContainerdError(err, `containerd Content.Write`);
      if (e.code === "failed_precondition" && /digest/i.test(e.message)) {
        await abortIngest(conn, opts.ref, opts.call).catch(() => {});
        throw new ContainerdError("digest_mismatch", `${name}: containerd rejected the commit, the content does not match ${opts.digest}: ${e.message}`, { cause: err });
      }
      throw e;
    }
    return { existed: false, written, resumedFrom };
  } finally {
    stopReplyTimer();
    if (!call.writableEnded) call.end();
    call.cancel();
  }
}
