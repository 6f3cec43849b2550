// The directory walk of Grep and Glob: depth first, names sorted, symlinks
// not followed, .git directories skipped, and /proc, /sys and /dev not entered
// (their files are not files: some block a reader, and a walk from "/" would
// spend its time there); bounded by a deadline and an entry count; the caller
// stops it by returning false.
import fs from "node:fs/promises";
import path from "node:path";

export const SKIPPED_DIRS: ReadonlySet<string> = new Set([".git"]);
/** Kernel file systems a walk does not enter (they can still be searched by naming one of their files). */
export const SKIPPED_ABSOLUTE_DIRS: ReadonlySet<string> = new Set(["/proc", "/sys", "/dev"]);

export interface WalkEntry {
  /** Path relative to the root, "/"-separated. */
  rel: string;
  abs: string;
  kind: "file" | "dir" | "symlink" | "other";
}

export type WalkStop = "" | "deadline" | "entries";

/** Calls visit for each entry below root (not root itself); stops when it returns false. */
export async function walk(
  root: string,
  opts: { deadline: number; maxEntries: number },
  visit: (e: WalkEntry) => boolean | Promise<boolean>,
): Promise<WalkStop> {
  const stack: Array<{ abs: string; rel: string }> = [{ abs: root, rel: "" }];
  let seen = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    if (Date.now() > opts.deadline) return "deadline";
    let entries;
    try {
      entries = await fs.readdir(dir.abs, { withFileTypes: true });
    } catch {
      // Unreadable or vanished: nothing to search there.
      continue;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const subdirs: Array<{ abs: string; rel: string }> = [];
    for (const e of entries) {
      if (++seen > opts.maxEntries) return "entries";
      const rel = dir.rel === "" ? e.name : `${dir.rel}/${e.name}`;
      const abs = path.join(dir.abs, e.name);
      const kind = e.isDirectory() ? "dir" : e.isFile() ? "file" : e.isSymbolicLink() ? "symlink" : "other";
      if (kind === "dir" && (SKIPPED_DIRS.has(e.name) || SKIPPED_ABSOLUTE_DIRS.has(abs))) continue;
      if (!(await visit({ rel, abs, kind }))) return "";
      if (Date.now() > opts.deadline) return "deadline";
      if (kind === "dir") subdirs.push({ abs, rel });
    }
    // Depth first in name order: push in reverse so the first name pops first.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
  }
  return "";
}
