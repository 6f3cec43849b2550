// Export through an agent's ReadTree: the whole tree in one stream (headers and file bytes
// interleaved), archived as it arrives. The same archive as the ListDir + ReadRaw path
// (packBridgeTree, kept for agents without the "read-tree" capability): regular files,
// directories and symlinks with their permission bits and mtimes, a file's size taken from
// the agent's fstat of the open fd; names or link targets that are not UTF-8 and paths
// longer than PATH_MAX are left out and reported, like FIFOs, sockets and devices.
import type { BridgeClient, TreeEvent } from "../bridge/client.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { ArchiveWriter } from "./archive.js";

const PATH_MAX_BYTES = 4095;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The bytes as text when they are valid UTF-8. */
function text(b: Buffer): string | undefined {
  try {
    return utf8.decode(b);
  } catch {
    return undefined;
  }
}

/** How the skipped list shows a path: UTF-8, or latin1-escaped bytes. */
function shown(b: Buffer): string {
  return text(b) ?? JSON.stringify(b.toString("latin1")).slice(1, -1);
}

/**
 * Archives the workspace's `dir` (default /data) with one ReadTree call; the root's own
 * directory entry is written as ".". Honours `signal` (the call is cancelled).
 */
export async function packReadTree(client: BridgeClient, writer: ArchiveWriter, opts: { dir?: string; signal?: AbortSignal } = {}): Promise<void> {
  const dir = (opts.dir ?? "/data").replace(/\/+$/, "") || "/";
  const prefix = Buffer.byteLength(dir === "/" ? "/" : `${dir}/`);
  const events = client.readTree(dir, {}, { timeoutMs: 24 * 3600_000, ...(opts.signal ? { signal: opts.signal } : {}) })[Symbol.asyncIterator]();
  const next = async (): Promise<TreeEvent | undefined> => {
    const r = await events.next();
    return r.done ? undefined : r.value;
  };
  /** The data of a file of `size` bytes (the client checked the counts); stops at a truncated event. */
  async function* bytesOf(name: string, size: number): AsyncGenerator<Uint8Array> {
    let due = size;
    while (due > 0) {
      const ev = await next();
      if (ev?.kind === "data") {
        due -= ev.data.byteLength;
        yield ev.data;
      } else {
        if (ev?.kind === "truncated") writer.skipped.push(`${name}: ${ev.reason} (archived padded with zeros to ${size} bytes)`);
        return;
      }
    }
  }
  try {
    for (let ev = await next(); ev !== undefined; ev = await next()) {
      if (ev.kind === "skipped") {
        writer.skipped.push(`${shown(ev.path)}: ${ev.reason}`);
        continue;
      }
      if (ev.kind !== "entry") continue; // the client allows data and truncated only after a file's entry
      if (ev.path.byteLength === 0) {
        await writer.directory(".", ev.mode, ev.mtimeMs);
        continue;
      }
      const name = text(ev.path);
      const target = ev.type === FileType.SYMLINK ? text(ev.symlinkTarget) : "";
      const tooLong = prefix + ev.path.byteLength > PATH_MAX_BYTES;
      if (name === undefined || target === undefined || tooLong) {
        writer.skipped.push(`${shown(ev.path)}: ${tooLong ? "path longer than PATH_MAX" : "its name or link target is not UTF-8"} (not archived)`);
        if (ev.type === FileType.FILE) for await (const _ of bytesOf(shown(ev.path), ev.size));
        continue;
      }
      switch (ev.type) {
        case FileType.DIRECTORY:
          await writer.directory(name, ev.mode, ev.mtimeMs);
          break;
        case FileType.SYMLINK:
          await writer.symlink(name, target, ev.mtimeMs);
          break;
        case FileType.FILE: {
          const chunks = bytesOf(name, ev.size);
          await writer.file(name, ev.mode, ev.mtimeMs, ev.size, chunks);
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
