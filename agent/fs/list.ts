import fsSync, { type Dir, type Dirent } from "node:fs";
import { setImmediate as yieldLoop } from "node:timers/promises";
import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { errnoAt, failedPrecondition, resourceExhausted } from "../errors.js";
import {
  LIST_DEFAULT_LIMIT,
  LIST_MAX_LIMIT,
  LIST_PAGE_MAX_BYTES,
  LIST_SORT_MAX_ENTRIES,
  LIST_WALK_CAP,
  LIST_WALK_MAX_BYTES,
} from "../limits.js";
import { PATH_MAX_BYTES, requestPath, type FsPath } from "../paths.js";
import { isErrno } from "./errno.js";
import {
  describe,
  describeUnreachable,
  direntName,
  fileInfoWireBytes,
  fileTypeOf,
  kindOf,
  openDirBytes,
  type FileInfoInit,
} from "./fileinfo.js";
import type { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** Directories read at once during a recursive walk. */
const READDIR_CONCURRENCY = 16;
/**
 * A page's entries are lstat'ed synchronously, this many between two turns of the
 * event loop (a few milliseconds), as the read paths make their calls (fd.ts: a
 * workspace cannot mount anything that could hang one). Measured on a 2-core VM, the
 * agent alone, alternating: a page of 10,000 entries 272–376 ms (agent CPU 337–423 ms)
 * with 64 lstats in flight in the thread pool, 247–268 ms (219–281 ms) so; 51 entries
 * 2.4–3.1 ms of agent CPU a call, 2.0–2.5 so.
 */
const LSTAT_BATCH = 256;
/** Entries one readdir system call returns while a directory is streamed. */
const DIR_BUFFER_ENTRIES = 512;
/**
 * A walk reads a directory whose st_size is at most this in one scandir; a
 * larger one is streamed, so one huge directory cannot fill memory before
 * the walk cap stops it. Directory sizes grow with their entries on the
 * common file systems (tmpfs: 20 bytes each; ext4, xfs, btrfs: about the
 * names' bytes): this is ~10,000 entries. (Measured on 12,850 entries in
 * 1,500 small directories: scandir ≈ 30 ms, streaming every one ≈ 100 ms.)
 */
const SCANDIR_MAX_DIR_BYTES = 256 * 1024;

/**
 * The entries of one listing, before they are described. Paths are relative
 * to the listed directory, '/'-separated, as latin1 strings (one char per
 * byte: compact, and the default sort is byte order).
 */
export interface Listing {
  /** Entries in the whole listing. */
  total: number;
  /** True: by path, byte order; false: the order the directory was read in. */
  sorted: boolean;
  /** The requested page's entries, in order. */
  page: string[];
  /** Type of each listed entry whose absolute path is over PATH_MAX (no lstat can reach it). */
  unreachable: Map<string, FileType>;
  /** The most names held in memory at once while reading (what bounds the agent's memory). */
  namesHeld: number;
}

/**
 * A directory's entries, optionally recursive, paged by count and by encoded
 * bytes (LIST_PAGE_MAX_BYTES, so a page of long or non-UTF-8 names still fits
 * a message). Non-recursive: streamed (readDirPage); recursive: walked, then
 * sorted (walkTree). Only the page's entries are lstat'ed.
 */
export async function listDir(ctx: AgentContext, req: pb.ListDirRequest): Promise<MessageInitShape<typeof pb.ListDirResponseSchema>> {
  const root = requestPath(ctx.dataDir, req);
  const limit = Math.min(req.limit === 0 ? LIST_DEFAULT_LIMIT : req.limit, LIST_MAX_LIMIT);
  const listing = req.recursive ? await walkPage(root, req.maxDepth, req.offset, limit) : await readDirPage(root, req.offset, limit);

  const entries: FileInfoInit[] = [];
  let bytes = 0;
  let consumed = 0;
  let truncated = false;
  // Described a batch at a time, so a page cut by its byte budget lstats little more than
  // it returns, and other calls get the event loop between batches.
  for (let start = 0; start < listing.page.length && !truncated; start += LSTAT_BATCH) {
    if (start > 0) await yieldLoop();
    const described = listing.page.slice(start, start + LSTAT_BATCH).map((rel) => describeEntry(root, rel, listing.unreachable));
    for (const info of described) {
      if (info !== undefined) {
        const size = fileInfoWireBytes(info);
        if (entries.length > 0 && bytes + size > LIST_PAGE_MAX_BYTES) {
          truncated = true;
          break;
        }
        bytes += size;
        entries.push(info);
      }
      consumed++;
    }
  }
  const nextOffset = req.offset + consumed;
  return { entries, total: listing.total, hasMore: nextOffset < listing.total, nextOffset, truncated, sorted: listing.sorted };
}

/** Whether an entry of `rel` (latin1) below `root` has a path no system call accepts. */
function overPathMax(root: FsPath, rel: string): boolean {
  return root.bytes.byteLength + (root.isRoot ? 0 : 1) + rel.length > PATH_MAX_BYTES;
}

async function openListedDir(root: FsPath): Promise<Dir> {
  try {
    return await openDirBytes(root.bytes, DIR_BUFFER_ENTRIES);
  } catch (err) {
    throw await notListable(err, root);
  }
}

/** ENOTDIR names what the path is (a file, a FIFO…) or says that a parent is the problem. */
async function notListable(err: unknown, root: FsPath): Promise<unknown> {
  if (!isErrno(err, "ENOTDIR")) return errnoAt(err, root.shown);
  const st = await fs.stat(root.bytes).catch(() => undefined);
  if (!st) return failedPrecondition(`cannot list ${root}: a parent is not a directory`);
  const advice = st.isFile() ? "use Stat or ReadFile" : "use Stat";
  return failedPrecondition(`${root} is ${kindOf(st)}, not a directory; ${advice}`);
}

/**
 * One page of a directory's direct entries, reading the directory as a
 * stream. Up to `sortMax` entries the listing is sorted by name (byte order);
 * past that it is paged in the order the directory is read, which the file
 * system keeps while the directory does not change. Either way at most
 * `sortMax` + `limit` names are held at once, however large the directory.
 */
export async function readDirPage(root: FsPath, offset: number, limit: number, sortMax = LIST_SORT_MAX_ENTRIES): Promise<Listing> {
  const dir = await openListedDir(root);
  let names: string[] = [];
  let page: string[] = [];
  let unreachable = new Map<string, FileType>();
  let sorted = true;
  let position = 0;
  let namesHeld = 0;
  const inPage = (at: number) => at >= offset && at - offset < limit;
  for await (const entry of dir) {
    const name = direntName(entry).toString("latin1");
    if (sorted) {
      names.push(name);
      if (overPathMax(root, name)) unreachable.set(name, fileTypeOf(entry));
      if (names.length > sortMax) {
        // Too many to sort: from here on, directory order. The names read so far are positions 0..sortMax.
        sorted = false;
        page = names.slice(offset, offset + limit);
        const kept = new Map<string, FileType>();
        for (const n of page) {
          const type = unreachable.get(n);
          if (type !== undefined) kept.set(n, type);
        }
        unreachable = kept;
        namesHeld = Math.max(namesHeld, names.length + page.length);
        names = [];
      }
    } else if (inPage(position)) {
      page.push(name);
      if (overPathMax(root, name)) unreachable.set(name, fileTypeOf(entry));
    }
    position++;
    namesHeld = Math.max(namesHeld, names.length + page.length);
  }
  if (sorted) {
    names.sort();
    page = names.slice(offset, offset + limit);
  }
  return { total: position, sorted, page, unreachable, namesHeld };
}

/** One page of a recursive listing: the whole walk, sorted by path. */
async function walkPage(root: FsPath, maxDepth: number, offset: number, limit: number): Promise<Listing> {
  const walk = await walkTree(root, maxDepth);
  walk.found.sort();
  return {
    total: walk.found.length,
    sorted: true,
    page: walk.found.slice(offset, offset + limit),
    unreachable: walk.unreachable,
    namesHeld: walk.found.length,
  };
}

export interface Walk {
  /** Relative paths (latin1) of every entry found, in no particular order. */
  found: string[];
  /** Entries whose absolute paths are over PATH_MAX: listed with their type, not descended. */
  unreachable: Map<string, FileType>;
}

/**
 * Every entry under `root` down to `maxDepth` levels (0 = all), at most
 * `walkCap` entries and `bytesCap` bytes of relative paths (RESOURCE_EXHAUSTED
 * beyond: 100,000 paths near PATH_MAX would otherwise be 400 MB). Symlinks are
 * listed, never followed. A subdirectory that cannot be read (gone, permission
 * denied) is listed itself without its contents; the listed directory must be
 * readable. An entry whose absolute path is over PATH_MAX is listed with its
 * type, and a directory there is not descended: no system call can name what
 * is inside it.
 */
export async function walkTree(root: FsPath, maxDepth: number, walkCap = LIST_WALK_CAP, bytesCap = LIST_WALK_MAX_BYTES): Promise<Walk> {
  const overCap = () =>
    resourceExhausted(
      `listing ${root} visits more than ${walkCap} entries; ` +
        `lower max_depth, list a subdirectory, or list without recursive`,
    );
  const overBytes = () =>
    resourceExhausted(
      `listing ${root} collects more than ${bytesCap} bytes of paths (deep or long names); ` +
        `lower max_depth, list a subdirectory, or list without recursive`,
    );
  let bytes = 0;
  let first: Dirent[] | undefined;
  try {
    first = await readUpTo(root, walkCap);
  } catch (err) {
    throw await notListable(err, root);
  }
  if (first === undefined) throw overCap();

  const found: string[] = [];
  const unreachable = new Map<string, FileType>();
  const pending: Array<{ rel: string; depth: number }> = [];
  const visit = (dirRel: string, depth: number, dirents: Dirent[] | undefined): void => {
    if (dirents === undefined || found.length + dirents.length > walkCap) throw overCap();
    for (const d of dirents) {
      const name = direntName(d).toString("latin1");
      const rel = dirRel === "" ? name : `${dirRel}/${name}`;
      bytes += rel.length;
      if (bytes > bytesCap) throw overBytes();
      found.push(rel);
      if (overPathMax(root, rel)) {
        unreachable.set(rel, fileTypeOf(d));
        continue;
      }
      // Dirent types come from lstat semantics: a symlink to a directory is not a directory here.
      if (d.isDirectory() && (maxDepth === 0 || depth < maxDepth)) pending.push({ rel, depth: depth + 1 });
    }
  };
  visit("", 1, first);

  // A bounded pool of readdirs: each finished one may queue more.
  await new Promise<void>((resolve, reject) => {
    let active = 0;
    let failed = false;
    const pump = (): void => {
      while (!failed && active < READDIR_CONCURRENCY && pending.length > 0) {
        const dir = pending.pop()!;
        active++;
        readUpTo(root.child(dir.rel), walkCap - found.length).then(
          (dirents) => {
            active--;
            if (failed) return;
            try {
              visit(dir.rel, dir.depth, dirents);
            } catch (err) {
              failed = true;
              reject(err);
              return;
            }
            pump();
          },
          () => {
            // Unreadable or vanished subdirectory: listed itself, its contents skipped.
            active--;
            pump();
          },
        );
      }
      if (!failed && active === 0 && pending.length === 0) resolve();
    };
    pump();
  });
  return { found, unreachable };
}

/** A directory's entries (names as bytes, with their types), or undefined when it has more than `max`. */
async function readUpTo(dir: FsPath, max: number): Promise<Dirent[] | undefined> {
  const st = await fs.stat(dir.bytes);
  if (st.size <= SCANDIR_MAX_DIR_BYTES) {
    // Node accepts encoding "buffer" (names as Buffers); its typings only list text encodings.
    const all = await fs.readdir(dir.bytes, { withFileTypes: true, encoding: "buffer" as BufferEncoding });
    return all.length > max ? undefined : all;
  }
  const entries: Dirent[] = [];
  for await (const entry of await openDirBytes(dir.bytes, DIR_BUFFER_ENTRIES)) {
    if (entries.length === max) return undefined; // leaving the loop closes the directory
    entries.push(entry);
  }
  return entries;
}

/** FileInfo of one listed entry, or undefined when it vanished after the directory was read. */
function describeEntry(root: FsPath, rel: string, unreachable: ReadonlyMap<string, FileType>): FileInfoInit | undefined {
  const relBytes = Buffer.from(rel, "latin1");
  const name = relBytes.subarray(relBytes.lastIndexOf(0x2f) + 1);
  const type = unreachable.get(rel);
  if (type !== undefined) return describeUnreachable(relBytes, name, type);
  const abs = root.child(relBytes);
  try {
    return describe(abs, relBytes, name, fsSync.lstatSync(abs.bytes));
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw errnoAt(err, abs.shown);
  }
}
