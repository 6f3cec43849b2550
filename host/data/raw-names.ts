// Workspace paths as bytes on the host side of the data operations (archive, extract,
// import swap).
//
// A Linux file name is any bytes but "/" and NUL, and a path inside /data can be longer
// than PATH_MAX (it is made with relative mkdir/chdir). Node decodes string paths it
// reads (readdir, readlink) as UTF-8, replacing invalid bytes, and a system call refuses
// a path of 4096 bytes or more (ENAMETOOLONG): a tree walked with string paths loses such
// names, and one walked with absolute paths stops at the first deep entry. Everything
// here keeps names as Buffers, and reaches a long path through directories opened on the
// way (`/proc/self/fd/<fd>/...`, each opened with O_NOFOLLOW), the host's equivalent of
// the agent's openat walk.
//
// Relative paths travel as "binary strings" (latin1: one character per byte), so they can
// be split on "/", compared and used as map keys without decoding; `bytesOf` turns one
// back into its bytes.
import fs from "node:fs";

/** Longest path handed to one system call (PATH_MAX is 4096 with the NUL; room for a last name of 255 bytes). */
export const SHORT_PATH_BYTES = 3800;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const lossyUtf8 = new TextDecoder("utf-8");

/** The bytes as text when they are valid UTF-8, else undefined. */
export function utf8OrUndefined(b: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(b);
  } catch {
    return undefined;
  }
}

/** A display form of a name: its text when valid UTF-8, else each invalid byte as \xNN. */
export function shownName(b: Uint8Array): string {
  const t = utf8OrUndefined(b);
  if (t !== undefined) return t;
  let out = "";
  let i = 0;
  while (i < b.length) {
    // Longest valid UTF-8 run from i, then one escaped byte.
    let j = i;
    while (j < b.length && b[j]! < 0x80) j++;
    if (j > i) {
      out += Buffer.from(b.subarray(i, j)).toString("latin1");
      i = j;
      continue;
    }
    let done = false;
    for (let n = 4; n >= 2 && !done; n--) {
      if (i + n > b.length) continue;
      const s = utf8OrUndefined(b.subarray(i, i + n));
      if (s !== undefined) {
        out += s;
        i += n;
        done = true;
      }
    }
    if (!done) {
      out += `\\x${b[i]!.toString(16).padStart(2, "0")}`;
      i++;
    }
  }
  return out;
}

/** The display form, cut to `max` characters (a deep path in an error message). */
export function shortName(b: Uint8Array, max = 300): string {
  const s = shownName(b.byteLength > max * 4 ? b.subarray(0, max * 4) : b);
  return s.length > max || b.byteLength > max * 4 ? `${s.slice(0, max)}…` : s;
}

/** A lossy UTF-8 text form (each invalid sequence replaced by U+FFFD), for tools that read only text names. */
export function lossyName(b: Uint8Array): string {
  return lossyUtf8.decode(b);
}

/** The bytes of a binary string (one character per byte). */
export function bytesOf(bin: string): Buffer {
  return Buffer.from(bin, "latin1");
}

/** The binary string of bytes (one character per byte). */
export function binaryOf(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1");
}

/** The display form of a binary string, cut to 300 characters. */
export function shownBinary(bin: string): string {
  return shortName(bytesOf(bin));
}

const slash = Buffer.from("/");

/**
 * Calls `fn` with a host path for `rel` (a binary string, "/"-separated, no "." or "..")
 * below the host directory `root`. When the whole path is too long for one system call,
 * ancestors are opened as directories (O_DIRECTORY | O_NOFOLLOW) and the path goes on
 * from `/proc/self/fd/<fd>`; those fds are closed when `fn` has settled. Callers only
 * pass ancestors they know to be real directories of a tree nothing else changes (a
 * staging dir, or a paused workspace's rootfs).
 */
export async function atPath<T>(root: string | Buffer, rel: string, fn: (p: Buffer) => Promise<T> | T): Promise<T> {
  const base = typeof root === "string" ? Buffer.from(root) : root;
  if (rel === "") return fn(base);
  const relBytes = bytesOf(rel);
  if (base.byteLength + 1 + relBytes.byteLength <= SHORT_PATH_BYTES) return fn(Buffer.concat([base, slash, relBytes]));
  const fds: number[] = [];
  try {
    let cur = base;
    for (const part of rel.split("/")) {
      const name = bytesOf(part);
      if (cur.byteLength + 1 + name.byteLength > SHORT_PATH_BYTES) {
        const fd = fs.openSync(cur, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
        fds.push(fd);
        cur = Buffer.from(`/proc/self/fd/${fd}`);
      }
      cur = Buffer.concat([cur, slash, name]);
    }
    return await fn(cur);
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
}

/** A directory path usable for its children: itself when short, else `/proc/self/fd/<fd>` of it opened (close with release). */
export function openForChildren(dir: Buffer): { path: Buffer; release(): void } {
  if (dir.byteLength + 1 + 255 <= SHORT_PATH_BYTES) return { path: dir, release: () => undefined };
  const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  return { path: Buffer.from(`/proc/self/fd/${fd}`), release: () => fs.closeSync(fd) };
}

/** The child `name` of the directory path `dir`. */
export function child(dir: Buffer, name: Buffer): Buffer {
  return Buffer.concat([dir, slash, name]);
}
