// Path rules of ContainerService: relative paths resolve against the data dir,
// absolute paths are used as they are (the agent is root in its own container).
//
// File names on Linux are bytes, not text: a request names a file with a
// UTF-8 string (`path`) or with raw bytes (`path_bytes`), and the agent hands
// the kernel bytes (Node's fs takes Buffer paths), so every file is reachable
// whatever its name. Inside the agent such byte strings are Buffers, or
// "latin1" JS strings where a compact, byte-ordered string is wanted (one
// char per byte: the default sort is byte order).
import { isUtf8 } from "node:buffer";
import path from "node:path";
import { invalidArgument } from "./errors.js";
import { MAX_PATH_LENGTH } from "./limits.js";

/** Longest path the kernel accepts: Linux's PATH_MAX (4096) counts the terminating NUL. */
export const PATH_MAX_BYTES = 4095;
/** Longest file name (Linux NAME_MAX), in bytes. */
export const NAME_MAX_BYTES = 255;

/** The path fields of a request: text or bytes, exactly one of them set. */
export interface PathFields {
  path: string;
  pathBytes: Uint8Array;
}

/** An absolute path, normalised by name ("." and ".." resolved), as bytes. */
export class FsPath {
  private shownCache: string | undefined;

  constructor(readonly bytes: Buffer) {}

  static fromText(text: string): FsPath {
    return new FsPath(Buffer.from(text, "utf8"));
  }

  /** The path for messages: UTF-8 as text, any byte that is not UTF-8 as \xNN. */
  get shown(): string {
    this.shownCache ??= showBytes(this.bytes);
    return this.shownCache;
  }

  toString(): string {
    return this.shown;
  }

  get isRoot(): boolean {
    return this.bytes.length === 1;
  }

  /** The last component ("/" for the root). */
  get name(): Buffer {
    if (this.isRoot) return this.bytes;
    return this.bytes.subarray(this.bytes.lastIndexOf(0x2f) + 1);
  }

  /** The directory holding it (the root for the root). */
  parent(): FsPath {
    const slash = this.bytes.lastIndexOf(0x2f);
    return slash <= 0 ? new FsPath(Buffer.from("/")) : new FsPath(this.bytes.subarray(0, slash));
  }

  /** `name` (one component or a relative path, as bytes or latin1) inside this directory. */
  child(name: Buffer | string): FsPath {
    const tail = typeof name === "string" ? Buffer.from(name, "latin1") : name;
    return new FsPath(Buffer.concat(this.isRoot ? [this.bytes, tail] : [this.bytes, SLASH, tail]));
  }

  /** True when `other` lies strictly below this path. */
  holds(other: FsPath): boolean {
    if (other.bytes.length <= this.bytes.length) return false;
    if (this.isRoot) return true;
    return other.bytes[this.bytes.length] === 0x2f && other.bytes.subarray(0, this.bytes.length).equals(this.bytes);
  }

  equals(other: FsPath): boolean {
    return this.bytes.equals(other.bytes);
  }
}

const SLASH = Buffer.from("/");

/**
 * Validates a request's path fields and returns the path absolute. `field`
 * names the text field in errors (the bytes field is `<field>_bytes`).
 */
export function requestPath(dataDir: string, fields: PathFields, field = "path"): FsPath {
  const hasText = fields.path.length > 0;
  const hasBytes = fields.pathBytes.byteLength > 0;
  if (hasText && hasBytes) throw invalidArgument(`set ${field} or ${field}_bytes, not both`);
  if (!hasText && !hasBytes) throw invalidArgument(`${field} is empty`);
  const raw = hasBytes ? Buffer.from(fields.pathBytes) : Buffer.from(fields.path, "utf8");
  const name = hasBytes ? `${field}_bytes` : field;
  if (raw.includes(0)) throw invalidArgument(`${name} contains a NUL byte`);
  if (raw.byteLength > MAX_PATH_LENGTH) {
    throw invalidArgument(`${name} is ${raw.byteLength} bytes long, over the limit of ${MAX_PATH_LENGTH} bytes`);
  }
  // latin1 maps bytes to chars one to one, and "/" and "." are ASCII: the
  // string functions of node:path then work on bytes.
  const resolved = path.posix.resolve(Buffer.from(dataDir, "utf8").toString("latin1"), raw.toString("latin1"));
  const abs = new FsPath(Buffer.from(resolved, "latin1"));
  if (abs.bytes.byteLength > PATH_MAX_BYTES) {
    throw invalidArgument(
      `${name} ${abs.shown} is ${abs.bytes.byteLength} bytes long once resolved, over PATH_MAX (${PATH_MAX_BYTES} bytes): ` +
        `no system call can name it; Rename an ancestor directory to a shorter path to reach it`,
    );
  }
  return abs;
}

/** Validates a text path and returns it absolute (Exec and McpStdio working directories). */
export function resolvePath(dataDir: string, p: unknown, field = "path"): string {
  if (typeof p !== "string" || p.length === 0) throw invalidArgument(`${field} is empty`);
  if (p.includes("\0")) throw invalidArgument(`${field} contains a NUL byte`);
  const bytes = Buffer.byteLength(p, "utf8");
  if (bytes > MAX_PATH_LENGTH) throw invalidArgument(`${field} is ${bytes} bytes long, over the limit of ${MAX_PATH_LENGTH} bytes`);
  return path.resolve(dataDir, p);
}

/** Like resolvePath, but an empty value means the data dir itself (cwd fields). */
export function resolveDir(dataDir: string, p: string, field = "cwd"): string {
  return p === "" ? dataDir : resolvePath(dataDir, p, field);
}

/** Bytes as a FileInfo text field: exact when UTF-8, else lossy (U+FFFD) with the bytes beside it. */
export function textAndBytes(bytes: Buffer): { text: string; bytes: Uint8Array } {
  if (isUtf8(bytes)) return { text: bytes.toString("utf8"), bytes: new Uint8Array(0) };
  return { text: bytes.toString("utf8"), bytes: new Uint8Array(bytes) };
}

/** UTF-8 as text; each byte that is not part of a valid UTF-8 sequence as \xNN. */
export function showBytes(bytes: Uint8Array): string {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (isUtf8(buf)) return buf.toString("utf8");
  let out = "";
  let runStart = 0;
  let i = 0;
  while (i < buf.length) {
    const len = utf8SequenceLength(buf[i]!);
    if (len > 0 && i + len <= buf.length && isUtf8(buf.subarray(i, i + len))) {
      i += len;
      continue;
    }
    out += buf.toString("utf8", runStart, i) + `\\x${buf[i]!.toString(16).padStart(2, "0")}`;
    i++;
    runStart = i;
  }
  return out + buf.toString("utf8", runStart, buf.length);
}

function utf8SequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/**
 * At most `max` bytes of `name`, cut at a character boundary when the name is
 * UTF-8 (a name that is not UTF-8 is cut anywhere: it is bytes either way).
 */
export function truncateName(name: Buffer, max: number): Buffer {
  if (name.byteLength <= max) return name;
  let end = max;
  if (isUtf8(name)) {
    while (end > 0 && (name[end]! & 0xc0) === 0x80) end--;
  }
  return name.subarray(0, end);
}
