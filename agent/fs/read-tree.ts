// ReadTree: a directory tree in one server stream, for archiving. The agent walks
// the tree itself (lstat, never following a link below the root) and sends, per
// entry, a header and then a regular file's bytes, so a whole /data costs one call
// instead of a ListDir walk plus one ReadRaw per file.
//
// Directories are held open (O_DIRECTORY | O_NOFOLLOW) and their entries reached
// through /proc/self/fd/<fd>/<name>: a directory renamed or swapped for a symlink
// while it is walked never leads the walk elsewhere, and no path grows past PATH_MAX.
// Files are opened with O_NOFOLLOW | O_NONBLOCK; size, mode and mtime come from
// fstat of the open fd, and exactly that many bytes are sent.
//
// The per-entry system calls (lstat, open, fstat, the first read of up to
// TREE_READ_BLOCK_BYTES, close) are synchronous: on the local file system under
// /data each takes microseconds, a trip through libuv's thread pool tens of them,
// and that trip was most of the cost per file. The event loop is handed back every
// YIELD_EVERY entries and whenever the call waits; the rest of a larger file is
// read asynchronously, one block ahead of what is sent.
//
// A block is read after room for a frame's head and goes out as one data message
// framed around it (grpc/framed-send.ts): file bytes are not copied in the agent.
//
// Bounded: one file's block is held at a time, and the call waits whenever more than
// TREE_INFLIGHT_BYTES it wrote have not reached the transport yet, or grpc-js asks it
// to (write() false → 'drain'). Each directory's names are read in sorted batches
// (sorted-names.ts) from a stream of the directory: the call holds at most
// TREE_NAMES_HELD_BYTES of names across the directories it has open (twice that
// while one is read), so a directory of millions of entries, or a deep tree of large
// ones, is sent in order without being held whole. And every name read is an entry
// or a skipped record to come: a directory whose names would take the call past
// max_entries is refused as soon as that many have been read, before anything of it
// is sent.
//
// Asked for hardlinks, the walk remembers the path of each file with more than one
// link it sent (by device and inode, up to TREE_LINKS_HELD_BYTES), and a later name
// of the same file comes as an entry naming that path, without bytes (and without
// a read: the check is made on fstat before the first block is read).
//
// One file: the walk, the sending of a file's blocks and the bounds all work on one
// call's state (records sent and still due, bytes in flight, the directories open);
// split apart, every piece would take all of that state as arguments.
import fsSync, { constants, type Stats } from "node:fs";
import { setImmediate as yieldLoop } from "node:timers/promises";
import fs, { type FileHandle } from "node:fs/promises";
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { errnoAt, invalidArgument, resourceExhausted, RpcError } from "../errors.js";
import {
  TREE_INFLIGHT_BYTES,
  TREE_LINKS_HELD_BYTES,
  TREE_MAX_DEPTH,
  TREE_MAX_ENTRIES,
  TREE_NAMES_HELD_BYTES,
  TREE_READ_BLOCK_BYTES,
} from "../limits.js";
import { requestPath } from "../paths.js";
import { kindOf } from "./fileinfo.js";
import { nameCost, readSortedBatch } from "./sorted-names.js";
import { preFramed } from "../../proto/rpc.js";
import { frameAround, FRAME_HEADROOM_BYTES } from "../../proto/wire.js";
import { FileType, type ReadTreeMessageSchema, type ReadTreeRequest } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

type Out = MessageInitShape<typeof ReadTreeMessageSchema>;
type ReadTreeCall = grpc.ServerWritableStream<ReadTreeRequest, Out>;

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW | constants.O_NOCTTY;
const FILE_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
const SLASH = Buffer.from("/");
/** Entries walked between two turns of the event loop. */
const YIELD_EVERY = 32;

/** What the walk found for one name, ready to send. */
type Prepared =
  | { kind: "dir"; st: Stats }
  | { kind: "symlink"; st: Stats; target: Buffer }
  /**
   * `first`: FRAME_HEADROOM_BYTES of room, then the file's first block. `inode`: its
   * "dev:ino" (exact, from a bigint fstat) when it has more than one link and links are asked for.
   */
  | { kind: "file"; fd: number; st: Stats; first: Buffer; inode?: string }
  /** Another name of a file sent earlier as `target` (its fd is already closed). */
  | { kind: "link"; st: Stats; target: Buffer }
  | { kind: "skip"; reason: string };

/** A directory the walk is in, and which of its names are still to send. */
interface Level {
  /** /proc/self/fd/<fd> of the open directory. */
  readonly path: Buffer;
  /** Names (latin1) of the current batch, sorted; batch[next] is the next to send. */
  batch: string[];
  next: number;
  /** Estimated bytes of the batch's names not sent yet. */
  held: number;
  /** The last name sent: the next batch is read after it. */
  cursor: string | undefined;
  /** The batch holds every name after those sent: the directory need not be read again. */
  complete: boolean;
  /** Names not yet sent, as the last read counted them: records still to come from this directory's own entries. */
  due: number;
}

export interface ReadTreeOptions {
  /** Estimated bytes of names the call holds across its open directories (TREE_NAMES_HELD_BYTES unless set). */
  namesHeldBytes?: number;
  /** Filled in as the call goes. */
  stats?: ReadTreeStats;
}

/** What a ReadTree call read, to check its bounds (tests). */
export interface ReadTreeStats {
  /** Entries read from directories, every read counted. */
  entriesRead: number;
  /** Reads of a directory's names (one per batch). */
  directoryReads: number;
  /** The most estimated bytes of names held at once. */
  peakNamesBytes: number;
}

/** A request count: 0 means the cap, more than the cap is refused. */
function capped(value: number, cap: number, field: string): number {
  if (value > cap) throw invalidArgument(`${field} ${value} is over the agent's limit of ${cap} (0 = the limit)`);
  return value === 0 ? cap : value;
}

function errText(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case "ENOENT":
      return "vanished while the tree was read";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "ELOOP":
    case "ENOTDIR":
      return "replaced by a symlink or another kind of file while the tree was read";
    default:
      return `cannot be read: ${typeof code === "string" ? code : err instanceof Error ? err.message : String(err)}`;
  }
}

/** Reads into `buf` after FRAME_HEADROOM_BYTES from file offset `pos` until it is full or the file ends; the bytes read. */
async function readFull(fd: number, buf: Buffer, pos: number): Promise<number> {
  let got = 0;
  const room = buf.byteLength - FRAME_HEADROOM_BYTES;
  while (got < room) {
    const n = await new Promise<number>((resolve, reject) =>
      fsSync.read(fd, buf, FRAME_HEADROOM_BYTES + got, room - got, pos + got, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead))),
    );
    if (n === 0) break;
    got += n;
  }
  return got;
}

function closeFd(fd: number): void {
  try {
    fsSync.closeSync(fd);
  } catch {
    // nothing left to do
  }
}

/**
 * lstat of `name` in the directory `dirPath`, and for a file its opened fd and first
 * block. Synchronous system calls: on a local file system each takes microseconds,
 * against tens of microseconds for a trip through libuv's thread pool, and the walk
 * makes five of them per file; the event loop is handed back between entries.
 */
function prepare(dirPath: Buffer, name: Buffer, sentAs?: (inode: string) => Buffer | undefined): Prepared {
  const abs = Buffer.concat([dirPath, SLASH, name]);
  let st: Stats;
  try {
    st = fsSync.lstatSync(abs);
  } catch (err) {
    return { kind: "skip", reason: errText(err) };
  }
  if (st.isDirectory()) return { kind: "dir", st };
  if (st.isSymbolicLink()) {
    try {
      return { kind: "symlink", st, target: fsSync.readlinkSync(abs, { encoding: "buffer" }) };
    } catch (err) {
      return { kind: "skip", reason: errText(err) };
    }
  }
  if (!st.isFile()) return { kind: "skip", reason: `${kindOf(st)} (not archived)` };
  let fd: number;
  try {
    fd = fsSync.openSync(abs, FILE_FLAGS);
  } catch (err) {
    return { kind: "skip", reason: errText(err) };
  }
  try {
    const fst = fsSync.fstatSync(fd);
    if (!fst.isFile()) {
      fsSync.closeSync(fd);
      return { kind: "skip", reason: `replaced by ${kindOf(fst)} while the tree was read (not archived)` };
    }
    // Inode numbers can pass 2^53 (overlayfs with xino): the key is built from bigints.
    let inode: string | undefined;
    if (fst.nlink > 1 && sentAs !== undefined) {
      const big = fsSync.fstatSync(fd, { bigint: true });
      inode = `${big.dev}:${big.ino}`;
    }
    const target = inode === undefined ? undefined : sentAs?.(inode);
    if (target !== undefined) {
      fsSync.closeSync(fd);
      return { kind: "link", st: fst, target };
    }
    const first = Buffer.allocUnsafe(FRAME_HEADROOM_BYTES + Math.min(fst.size, TREE_READ_BLOCK_BYTES));
    let got = 0;
    while (FRAME_HEADROOM_BYTES + got < first.byteLength) {
      const n = fsSync.readSync(fd, first, FRAME_HEADROOM_BYTES + got, first.byteLength - FRAME_HEADROOM_BYTES - got, got);
      if (n === 0) break;
      got += n;
    }
    return { kind: "file", fd, st: fst, first: first.subarray(0, FRAME_HEADROOM_BYTES + got), ...(inode === undefined ? {} : { inode }) };
  } catch (err) {
    try {
      fsSync.closeSync(fd);
    } catch {
      // already reported
    }
    return { kind: "skip", reason: errText(err) };
  }
}

/** ReadTreeMessage{data=2} framed around a block (FRAME_HEADROOM_BYTES of room, then the data; see proto/wire.ts). */
function dataFrame(block: Buffer): Out {
  return preFramed(frameAround(block, FRAME_HEADROOM_BYTES, block.byteLength, 2, []));
}

export async function readTree(ctx: AgentContext, req: ReadTreeRequest, call: ReadTreeCall, opts: ReadTreeOptions = {}): Promise<void> {
  const target = requestPath(ctx.dataDir, req);
  const maxDepth = capped(req.maxDepth, TREE_MAX_DEPTH, "max_depth");
  const maxEntries = capped(req.maxEntries, TREE_MAX_ENTRIES, "max_entries");
  const namesHeldBytes = opts.namesHeldBytes ?? TREE_NAMES_HELD_BYTES;
  // Files with more than one link sent so far: "dev:ino" → the path they were sent as.
  const linked = new Map<string, Buffer>();
  let linkedBytes = 0;
  const sentAs = req.hardlinks ? (inode: string): Buffer | undefined => linked.get(inode) : undefined;
  const remember = (key: string | undefined, rel: Buffer): void => {
    if (key === undefined) return;
    const cost = key.length + rel.byteLength + 64;
    if (linkedBytes + cost > TREE_LINKS_HELD_BYTES) return;
    linked.set(key, rel);
    linkedBytes += cost;
  };
  const stats: ReadTreeStats = opts.stats ?? { entriesRead: 0, directoryReads: 0, peakNamesBytes: 0 };

  let root: FileHandle;
  try {
    // The root may be reached through a symlink (like every request path); nothing below it is.
    root = await fs.open(target.bytes, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOCTTY);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOTDIR") throw invalidArgument(`${target.shown} is not a directory; ReadTree reads directory trees`);
    throw errnoAt(err, target.shown);
  }

  let inflight = 0;
  let needDrain = false;
  let waiter: (() => void) | undefined;
  let sentRecords = 0;
  let sinceYield = 0;
  const wake = (): void => {
    const w = waiter;
    waiter = undefined;
    w?.();
  };
  const onDrain = (): void => {
    needDrain = false;
    wake();
  };
  call.on("drain", onDrain);
  call.on("cancelled", wake);
  call.on("close", wake);
  const stopped = (): boolean => call.cancelled || call.destroyed;
  /** Writes one message; waits while the transport is full or too many bytes are in flight. */
  const send = async (msg: Out, bytes: number): Promise<void> => {
    if (stopped()) return;
    inflight += bytes;
    if (!call.write(msg, () => {
      inflight -= bytes;
      if (inflight <= TREE_INFLIGHT_BYTES) wake();
    })) needDrain = true;
    while (!stopped() && (needDrain || inflight > TREE_INFLIGHT_BYTES)) {
      await new Promise<void>((resolve) => (waiter = resolve));
    }
  };
  const tooMany = () => resourceExhausted(`${target.shown} holds more than ${maxEntries} entries (max_entries); archive a smaller directory`);
  const record = async (msg: Out, bytes = 64): Promise<void> => {
    if (++sentRecords > maxEntries) throw tooMany();
    await send(msg, bytes);
  };
  const skipped = (path: Buffer, reason: string): Promise<void> => record({ msg: { case: "skipped", value: { path, reason } } });

  /** Sends a prepared file's bytes after its header: exactly st.size, or a truncated record. */
  const sendFile = async (rel: Buffer, f: Extract<Prepared, { kind: "file" }>): Promise<void> => {
    const size = f.st.size;
    let pos = 0;
    // Blocks are FRAME_HEADROOM_BYTES of room, then the file's bytes.
    let block: Buffer = f.first;
    let next: Promise<Buffer> | undefined;
    let cut: string | undefined;
    try {
      while (!stopped()) {
        const got = block.byteLength - FRAME_HEADROOM_BYTES;
        // Read the next block while this one goes out.
        const nextAt = pos + got;
        next = undefined;
        if (got > 0 && nextAt < size) {
          const buf = Buffer.allocUnsafe(FRAME_HEADROOM_BYTES + Math.min(TREE_READ_BLOCK_BYTES, size - nextAt));
          next = readFull(f.fd, buf, nextAt).then((n) => buf.subarray(0, FRAME_HEADROOM_BYTES + n));
          next.catch(() => undefined);
        }
        if (got > 0) await send(dataFrame(block), got);
        pos = nextAt;
        if (pos >= size || stopped()) break;
        try {
          block = next === undefined ? Buffer.alloc(FRAME_HEADROOM_BYTES) : await next;
        } catch (err) {
          cut = errText(err);
          break;
        } finally {
          next = undefined;
        }
        if (block.byteLength === FRAME_HEADROOM_BYTES) {
          cut = `shrank while read: ${pos} of ${size} bytes`;
          break;
        }
      }
    } finally {
      // The fd is closed after this: no read of it may still be running then.
      await next?.catch(() => undefined);
    }
    if (cut !== undefined && !stopped()) {
      await send({ msg: { case: "truncated", value: { path: rel, sent: BigInt(pos), reason: cut } } }, 64);
    }
  };

  /** The directories the walk is in, the root first. */
  const stack: Level[] = [];
  const entryCounter = (): void => {
    stats.entriesRead++;
  };

  /**
   * Reads `level`'s next batch of names. Its room is what the directories above
   * leave of the call's allowance, and at least half of it: when they hold more,
   * their unsent names are dropped, the shallowest first, and read again when the
   * walk comes back to them. Throws RESOURCE_EXHAUSTED when its names together with
   * the records sent and those due from the directories above pass max_entries.
   */
  const refill = async (level: Level): Promise<void> => {
    let others = 0;
    let dueAbove = 0;
    for (const l of stack) {
      if (l === level) continue;
      others += l.held;
      dueAbove += l.due;
    }
    for (const l of stack) {
      if (others <= namesHeldBytes / 2) break;
      if (l === level || l.held === 0) continue;
      others -= l.held;
      l.batch = [];
      l.next = 0;
      l.held = 0;
      l.complete = false;
    }
    stats.directoryReads++;
    const batch = await readSortedBatch(level.path, {
      ...(level.cursor === undefined ? {} : { after: level.cursor }),
      roomBytes: namesHeldBytes - others,
      maxCount: Math.max(0, maxEntries - sentRecords - dueAbove),
      onEntry: entryCounter,
      stopped,
    });
    if (batch === undefined) throw tooMany();
    stats.peakNamesBytes = Math.max(stats.peakNamesBytes, others + batch.peakBytes);
    level.batch = batch.names;
    level.next = 0;
    level.held = batch.bytes;
    level.complete = batch.complete;
    level.due = batch.count;
  };

  const walk = async (dir: FileHandle, rel: Buffer, depth: number): Promise<void> => {
    const dirPath = Buffer.from(`/proc/self/fd/${dir.fd}`);
    const level: Level = { path: dirPath, batch: [], next: 0, held: 0, cursor: undefined, complete: false, due: 0 };
    const relOf = (name: Buffer): Buffer => (rel.byteLength === 0 ? name : Buffer.concat([rel, SLASH, name]));
    stack.push(level);
    try {
      while (!stopped()) {
        if (level.next === level.batch.length) {
          if (level.complete) break;
          try {
            await refill(level);
          } catch (err) {
            if (err instanceof RpcError) throw err;
            await skipped(rel, `its entries cannot be listed: ${errText(err)}`);
            return;
          }
          if (level.batch.length === 0) break;
        }
        const nameText = level.batch[level.next]!;
        // The slot is let go at once: only the names not yet sent count as held.
        level.batch[level.next++] = "";
        level.held -= nameCost(nameText);
        level.cursor = nameText;
        level.due--;
        // Hand the event loop back now and then: the system calls below are synchronous.
        if (++sinceYield >= YIELD_EVERY) {
          sinceYield = 0;
          await yieldLoop();
        }
        const name = Buffer.from(nameText, "latin1");
        const p = prepare(dirPath, name, sentAs);
        const childRel = relOf(name);
        switch (p.kind) {
          case "skip":
            await skipped(childRel, p.reason);
            break;
          case "symlink":
            await record({ msg: { case: "entry", value: entry(childRel, FileType.SYMLINK, p.st, { symlinkTarget: p.target }) } });
            break;
          case "file":
            try {
              await record({ msg: { case: "entry", value: entry(childRel, FileType.FILE, p.st, { size: BigInt(p.st.size) }) } });
              await sendFile(childRel, p);
              remember(p.inode, childRel);
            } finally {
              closeFd(p.fd);
            }
            break;
          case "link":
            await record({ msg: { case: "entry", value: entry(childRel, FileType.FILE, p.st, { size: 0n, hardlinkTarget: p.target }) } });
            break;
          case "dir": {
            if (depth + 1 >= maxDepth) {
              await skipped(childRel, `a directory deeper than max_depth ${maxDepth} (not descended)`);
              break;
            }
            let sub: FileHandle;
            try {
              sub = await fs.open(Buffer.concat([dirPath, SLASH, name]), DIR_FLAGS);
            } catch (err) {
              await skipped(childRel, errText(err));
              break;
            }
            try {
              const st = await sub.stat();
              await record({ msg: { case: "entry", value: entry(childRel, FileType.DIRECTORY, st) } });
              await walk(sub, childRel, depth + 1);
            } finally {
              await sub.close().catch(() => undefined);
            }
            break;
          }
        }
      }
    } finally {
      stack.pop();
    }
  };

  try {
    const st = await root.stat();
    await record({ msg: { case: "entry", value: entry(Buffer.alloc(0), FileType.DIRECTORY, st) } });
    await walk(root, Buffer.alloc(0), 0);
  } finally {
    call.off("drain", onDrain);
    call.off("cancelled", wake);
    call.off("close", wake);
    await root.close().catch(() => undefined);
  }
}

function entry(path: Buffer, type: FileType, st: Stats, extra: { size?: bigint; symlinkTarget?: Buffer; hardlinkTarget?: Buffer } = {}) {
  return {
    path,
    type,
    mode: st.mode & 0o7777,
    mtimeMs: BigInt(Math.trunc(st.mtimeMs)),
    uid: st.uid,
    gid: st.gid,
    ...extra,
  };
}
