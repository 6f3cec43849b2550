// The ReadTree stream from an agent, checked record by record before anything uses it:
// the root's entry first, plain relative paths, a FILE entry followed by exactly its
// size in data records (or fewer and a truncated record), nothing else in between.
import { RpcError, Status } from "../../proto/rpc.js";
import { FileType, type ReadTreeMessage } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export function protocolError(message: string): RpcError {
  return new RpcError(Status.INTERNAL, `bridge protocol violation: ${message}`);
}

/** One record of a ReadTree stream, checked (see checkTree). */
export type TreeEvent =
  | {
      kind: "entry";
      /** Relative to the tree's root ("" for the root itself), '/'-separated, the names' exact bytes. */
      path: Buffer;
      type: FileType.FILE | FileType.DIRECTORY | FileType.SYMLINK;
      mode: number;
      mtimeMs: number;
      /** FILE: exactly this many bytes follow as data events (unless a truncated event cuts them short). */
      size: number;
      symlinkTarget: Buffer;
      /** FILE asked with hardlinks: the path of an earlier entry that is the same file (no data follows); else empty. */
      hardlinkTarget: Buffer;
      uid: number;
      gid: number;
    }
  | { kind: "data"; data: Uint8Array }
  | { kind: "skipped"; path: Buffer; reason: string }
  | { kind: "truncated"; path: Buffer; sent: number; reason: string };

/** A relative tree path from the agent: no empty, "." or ".." component, no NUL, not absolute. */
function checkTreePath(p: Uint8Array, what: string): Buffer {
  const b = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
  if (b.byteLength === 0) return b;
  if (b.includes(0)) throw protocolError(`ReadTree ${what} path holds a NUL byte`);
  for (const part of b.toString("latin1").split("/")) {
    if (part === "" || part === "." || part === "..") throw protocolError(`ReadTree ${what} path ${JSON.stringify(b.toString("latin1"))} is not a plain relative path`);
  }
  return b;
}

function safeCount(v: bigint, what: string): number {
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`ReadTree ${what} ${v}`);
  return Number(v);
}

/**
 * Bytes of FILE entry paths a call asked for hardlinks keeps, to check that each link
 * names a file the stream sent before (an archive with a dangling link could not be
 * restored). Beyond it, a link to a path no longer held is taken as it comes.
 */
export const LINK_TARGETS_HELD_BYTES = 32 * 1024 * 1024;

/** The records of `stream` as TreeEvents; a stream that breaks the rules throws a protocol violation. */
export async function* checkTree(stream: AsyncIterable<ReadTreeMessage>, opts: { hardlinks?: boolean; heldBytes?: number } = {}): AsyncGenerator<TreeEvent> {
  // FILE entries sent so far (latin1 keys of their paths), while they fit in the budget.
  const files = new Set<string>();
  let filesBytes = 0;
  let filesComplete = true;
  const heldBytes = opts.heldBytes ?? LINK_TARGETS_HELD_BYTES;
  let first = true;
  /** The file whose bytes are being received, and how many are still due. */
  let file: Buffer | undefined;
  let due = 0;
  let fileSize = 0;
  for await (const raw of stream) {
    const m = raw.msg;
    if (first && m.case !== "entry") throw protocolError(`ReadTree began with ${m.case ?? "an empty message"}, not the root's entry`);
    if (m.case !== "data" && m.case !== "truncated" && due > 0) throw protocolError(`ReadTree sent ${m.case ?? "an empty message"} with ${due} bytes of a file still due`);
    switch (m.case) {
      case "entry": {
        const e = m.value;
        const p = checkTreePath(e.path, "entry");
        if (first !== (p.byteLength === 0)) throw protocolError(first ? "ReadTree's first entry is not the root" : "ReadTree sent a second root entry");
        if (first && e.type !== FileType.DIRECTORY) throw protocolError("ReadTree's root is not a directory");
        first = false;
        if (e.type !== FileType.FILE && e.type !== FileType.DIRECTORY && e.type !== FileType.SYMLINK) throw protocolError(`ReadTree entry of type ${e.type}`);
        const size = safeCount(e.size, "size");
        if (e.type !== FileType.FILE && size !== 0) throw protocolError("ReadTree sent a size for an entry that is not a file");
        const link = checkTreePath(e.hardlinkTarget, "hardlink target");
        if (link.byteLength > 0 && (e.type !== FileType.FILE || size !== 0 || link.equals(p))) throw protocolError("ReadTree sent a hardlink target for an entry that cannot be one");
        if (link.byteLength > 0) {
          if (!opts.hardlinks) throw protocolError("ReadTree sent a hardlink entry that was not asked for");
          if (filesComplete && !files.has(link.toString("latin1"))) throw protocolError(`ReadTree sent a hardlink to ${JSON.stringify(link.toString("latin1"))}, which is not a file it sent before`);
        } else if (opts.hardlinks && e.type === FileType.FILE && filesComplete) {
          filesBytes += p.byteLength + 64;
          if (filesBytes > heldBytes) {
            filesComplete = false;
            files.clear();
          } else files.add(p.toString("latin1"));
        }
        file = e.type === FileType.FILE ? p : undefined;
        due = e.type === FileType.FILE ? size : 0;
        fileSize = due;
        yield {
          kind: "entry",
          path: p,
          type: e.type,
          mode: e.mode & 0o7777,
          mtimeMs: Number(e.mtimeMs),
          size,
          symlinkTarget: Buffer.from(e.symlinkTarget),
          hardlinkTarget: link,
          uid: e.uid,
          gid: e.gid,
        };
        break;
      }
      case "data":
        if (m.value.byteLength === 0 || m.value.byteLength > due) throw protocolError(`ReadTree sent ${m.value.byteLength} bytes of data with ${due} due`);
        due -= m.value.byteLength;
        yield { kind: "data", data: m.value };
        break;
      case "skipped":
        yield { kind: "skipped", path: checkTreePath(m.value.path, "skipped"), reason: m.value.reason };
        break;
      case "truncated": {
        const p = checkTreePath(m.value.path, "truncated");
        if (file === undefined || due === 0 || !p.equals(file)) throw protocolError("ReadTree truncated a file it was not sending");
        const sent = safeCount(m.value.sent, "sent");
        if (sent !== fileSize - due) throw protocolError(`ReadTree truncated a file after ${sent} bytes, but sent ${fileSize - due}`);
        yield { kind: "truncated", path: p, sent, reason: m.value.reason };
        file = undefined;
        due = 0;
        break;
      }
      default:
        throw protocolError("ReadTree sent an empty message");
    }
  }
  if (first) throw protocolError("ReadTree ended without the root's entry");
  if (due > 0) throw protocolError(`ReadTree ended with ${due} bytes of a file still due`);
}
