// Helpers for the file RPC tests: status-code assertions and the two raw streams.
import assert from "node:assert/strict";
import { once } from "node:events";
import fs from "node:fs/promises";
import { ContainerService, type ReadRawChunk } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status, rpcCode, type CallOptions, type RpcClient, type StatusCode } from "../../../proto/rpc.js";

/** Asserts that `p` rejects with `code` and, if given, a message matching `message`. */
export async function rejectsWith(p: Promise<unknown>, code: StatusCode, message?: RegExp): Promise<Error> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof Error, `expected ${Status[code]}, but the call succeeded`);
  const got = rpcCode(caught);
  assert.equal(got, code, `expected ${Status[code]}, got ${got === undefined ? "no code" : Status[got]}: ${caught.message}`);
  if (message) assert.match(caught.message, message);
  return caught;
}

export interface RawRead {
  chunks: ReadRawChunk[];
  data: Buffer;
}

/** Reads a ReadRaw stream to its end. */
export async function readRawAll(
  client: RpcClient,
  req: { path?: string; pathBytes?: Uint8Array; offset?: bigint; length?: bigint },
  opts?: CallOptions,
): Promise<RawRead> {
  const call = client.serverStream(ContainerService.method.readRaw, req, opts);
  const chunks: ReadRawChunk[] = [];
  for await (const chunk of call as AsyncIterable<ReadRawChunk>) chunks.push(chunk);
  return { chunks, data: Buffer.concat(chunks.map((c) => c.data)) };
}

/** Streams `data` with WriteRaw in `chunkBytes` chunks, honouring backpressure. */
export async function writeRawAll(client: RpcClient, path: string, data: Uint8Array, opts: { chunkBytes?: number; mode?: number } = {}) {
  const chunkBytes = opts.chunkBytes ?? 64 * 1024;
  const { call, response } = client.clientStream(ContainerService.method.writeRaw);
  call.write({ msg: { case: "start", value: { path, mode: opts.mode ?? 0 } } });
  for (let off = 0; off < data.byteLength; off += chunkBytes) {
    const chunk = data.subarray(off, Math.min(off + chunkBytes, data.byteLength));
    if (!call.write({ msg: { case: "chunk", value: { data: chunk, offset: BigInt(off) } } })) {
      await Promise.race([once(call, "drain"), response.catch(() => undefined)]);
    }
  }
  call.end();
  return response;
}

/** Names in `dir` that look like our temp files. */
export async function tempFilesIn(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => n.includes(".memoh-tmp-"));
}
