import type { Dirent } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { failedPrecondition, resourceExhausted } from "../errors.js";
import { LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_WALK_CAP } from "../limits.js";
import { resolvePath } from "../paths.js";
import { isErrno } from "./errno.js";
import { describe, type FileInfoInit } from "./fileinfo.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

/** Directories read at once during a recursive walk. */
const READDIR_CONCURRENCY = 16;
/**
 * lstats in flight for a page: enough to keep libuv's thread pool busy while the
 * main thread handles completions. (Measured on 2 cores, 10k entries: 4 in
 * flight ≈ 300 ms, 64 ≈ 190 ms; lstatSync in slices ≈ 85 ms, but a hung mount
 * would then stall the whole agent, health checks included, so we stay async.)
 */
const LSTAT_CONCURRENCY = 64;

/**
 * A directory's entries sorted by path (relative to the listed directory, '/'
 * separated), optionally recursive, paged. The walk reads names and types only
 * (readdir with file types); only the entries of the requested page are
 * lstat'ed, so a deep listing costs one lstat per returned entry, not per visited one.
 */
export async function listDir(ctx: AgentContext, req: pb.ListDirRequest): Promise<MessageInitShape<typeof pb.ListDirResponseSchema>> {
  const root = resolvePath(ctx.dataDir, req.path);
  const maxDepth = req.recursive ? req.maxDepth : 1; // 0 = no limit
  const found = await walkTree(root, maxDepth);
  found.sort();

  const limit = Math.min(req.limit === 0 ? LIST_DEFAULT_LIMIT : req.limit, LIST_MAX_LIMIT);
  const page = found.slice(req.offset, req.offset + limit);
  const described = await mapLimit(page, LSTAT_CONCURRENCY, (rel) => describeEntry(root, rel));
  return {
    entries: described.filter((e): e is FileInfoInit => e !== undefined),
    total: found.length,
    hasMore: req.offset + page.length < found.length,
  };
}

/**
 * Relative paths of every entry under `root` down to `maxDepth` levels (0 = all).
 * Symlinks are listed, never followed. A subdirectory that cannot be read (gone,
 * permission denied) is skipped; the listed directory itself must be readable.
 */
export async function walkTree(root: string, maxDepth: number, walkCap = LIST_WALK_CAP): Promise<string[]> {
  let first: Dirent[];
  try {
    first = await fs.readdir(root, { withFileTypes: true });
  } catch (err) {
    if (isErrno(err, "ENOTDIR")) throw failedPrecondition(`${root} is not a directory; use Stat or ReadFile`);
    throw err;
  }

  const found: string[] = [];
  const pending: Array<{ rel: string; depth: number }> = [];
  const visit = (dirRel: string, depth: number, dirents: Dirent[]): void => {
    if (found.length + dirents.length > walkCap) {
      throw resourceExhausted(
        `listing ${root} visits more than ${walkCap} entries; ` +
          `lower max_depth, list a subdirectory, or list without recursive`,
      );
    }
    for (const d of dirents) {
      const rel = dirRel === "" ? d.name : `${dirRel}/${d.name}`;
      found.push(rel);
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
        fs.readdir(path.join(root, dir.rel), { withFileTypes: true }).then(
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
  return found;
}

/** FileInfo of one listed entry, or undefined when it vanished after the walk saw it. */
async function describeEntry(root: string, rel: string): Promise<FileInfoInit | undefined> {
  const abs = path.join(root, rel);
  try {
    const st = await fs.lstat(abs);
    return await describe(abs, rel, path.basename(rel), st);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
