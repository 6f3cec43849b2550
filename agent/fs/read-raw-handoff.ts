// ReadRaw's handoff: instead of a file's bytes, the agent names its open descriptor of
// the file, and the caller (the orchestrator, on the same host) opens that file itself
// through /proc/<agent pid>/fd/<fd> and reads it from the page cache.
//
// Why: a download through the agent crosses two processes before the HTTP client's
// (agent → socket → server), and on two cores those three share the CPU: the API's
// download ran at 53–55% of ReadRaw, a bare node:http relay of ReadRaw at 70–72%
// (BENCHMARKS.md). With the handoff the agent opens the file and is done; the bytes go
// file → server → client.
//
// What the caller may reach is what ReadRaw would have sent: the file is opened here,
// with ReadRaw's own path rules and checks (regular files only). The caller trusts none
// of this answer beyond what it checks itself (host/workspace/file-handoff.ts); the
// device and inode sent let it tell this file from another that took the fd number.
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import fs from "node:fs";
import { RpcError, Status } from "../errors.js";
import { READ_RAW_HANDOFF_HOLD_MS } from "../limits.js";
import type { OpenedFile } from "./open.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type ReadRawCall = grpc.ServerWritableStream<pb.ReadRawRequest, MessageInitShape<typeof pb.ReadRawChunkSchema>>;

/**
 * Sends the one chunk of a handoff and keeps `opened` open until the caller cancels
 * the call (it has opened its own descriptor by then) or READ_RAW_HANDOFF_HOLD_MS
 * pass; then closes it and, if the call is still there, ends it. Takes ownership of
 * `opened`.
 */
export async function handOff(call: ReadRawCall, opened: OpenedFile, offset: number): Promise<void> {
  const { abs, fh, st } = opened;
  try {
    if (offset > st.size) throw new RpcError(Status.OUT_OF_RANGE, `offset ${offset} is past the end of ${abs} (${st.size} bytes)`);
    // dev and ino as the kernel has them (a Number loses inode numbers past 2^53).
    const big = fs.fstatSync(fh.fd, { bigint: true });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, READ_RAW_HANDOFF_HOLD_MS);
      function done(): void {
        clearTimeout(timer);
        call.off("cancelled", done);
        call.off("close", done);
        resolve();
      }
      call.once("cancelled", done);
      call.once("close", done);
      if (call.cancelled || call.destroyed) return done();
      call.write({ offset: BigInt(offset), fileSize: BigInt(st.size), handoff: { pid: process.pid, fd: fh.fd, dev: big.dev, ino: big.ino } });
    });
  } finally {
    fh.close();
  }
  if (!call.cancelled && !call.destroyed) call.end();
}
