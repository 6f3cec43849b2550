// Export through an agent's ReadTree: the whole tree in one stream (headers and file bytes
// interleaved), archived as it arrives. The same archive as the ListDir + ReadRaw path
// (packBridgeTree, kept for agents without the "read-tree" capability): regular files,
// directories and symlinks with their permission bits, owners and mtimes, a file's size taken from
// the agent's fstat of the open fd. Paths come as bytes and are archived as bytes (any
// length, UTF-8 or not: archive.ts); FIFOs, sockets and devices are left out and reported.
// Files with several links are archived once and linked at their other names (the agent
// names the earlier path; an agent that predates this sends every name whole).
import type { BridgeClient, TreeEvent } from "../bridge/client.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { ArchiveWriter } from "./archive.js";

/**
 * Archives the workspace's `dir` (default /data) with one ReadTree call; the root's own
 * directory entry is written as ".". Honours `signal` (the call is cancelled).
 */
export async function packReadTree(client: BridgeClient, writer: ArchiveWriter, opts: { dir?: string; signal?: AbortSignal } = {}): Promise<void> {
  const dir = (opts.dir ?? "/data").replace(/\/+$/, "") || "/";
  const events = client.readTree(dir, { hardlinks: true }, { timeoutMs: 24 * 3600_000, ...(opts.signal ? { signal: opts.signal } : {}) })[Symbol.asyncIterator]();
  const next = async (): Promise<TreeEvent | undefined> => {
    const r = await events.next();
    return r.done ? undefined : r.value;
  };
  /** The data of a file of `size` bytes (the client checked the counts); stops at a truncated event. */
  async function* bytesOf(name: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
    let due = size;
    while (due > 0) {
      const ev = await next();
      if (ev?.kind === "data") {
        due -= ev.data.byteLength;
        yield ev.data;
      } else {
        if (ev?.kind === "truncated") writer.skip(name, `${ev.reason} (archived padded with zeros to ${size} bytes)`);
        return;
      }
    }
  }
  try {
    for (let ev = await next(); ev !== undefined; ev = await next()) {
      if (ev.kind === "skipped") {
        // The agent tells what it left out: FIFOs, sockets, devices, and files it could not read.
        if (/^an? (FIFO|Unix socket|character device|block device|special file)\b/.test(ev.reason)) writer.skip(ev.path, ev.reason);
        else writer.lose(ev.path, ev.reason);
        continue;
      }
      if (ev.kind !== "entry") continue; // the client allows data and truncated only after a file's entry
      const owner = { uid: ev.uid, gid: ev.gid };
      if (ev.path.byteLength === 0) {
        await writer.directory(".", ev.mode, ev.mtimeMs, owner);
        continue;
      }
      const name = ev.path;
      switch (ev.type) {
        case FileType.DIRECTORY:
          await writer.directory(name, ev.mode, ev.mtimeMs, owner);
          break;
        case FileType.SYMLINK:
          await writer.symlink(name, ev.symlinkTarget, ev.mtimeMs, owner);
          break;
        case FileType.FILE: {
          if (ev.hardlinkTarget.byteLength > 0) {
            await writer.hardlink(name, ev.hardlinkTarget, ev.mode, ev.mtimeMs, owner);
            break;
          }
          const chunks = bytesOf(name, ev.size);
          await writer.file(name, ev.mode, ev.mtimeMs, ev.size, chunks, owner);
          // writer.file stops at `size`; anything it did not take is consumed here.
          for await (const _ of chunks);
          break;
        }
      }
    }
  } finally {
    await events.return?.(undefined);
  }
}
