// FileInfo from lstat results, shared by Stat and ListDir, and the words the
// agent uses for kinds of files in its messages.
import fsSync, { type Dir, type Dirent, type PathLike, type Stats } from "node:fs";
import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { textAndBytes, type FsPath } from "../paths.js";
import { FileType, type FileInfoSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export type FileInfoInit = MessageInitShape<typeof FileInfoSchema>;

export function fileTypeOf(st: Stats | Dirent): FileType {
  if (st.isFile()) return FileType.FILE;
  if (st.isDirectory()) return FileType.DIRECTORY;
  if (st.isSymbolicLink()) return FileType.SYMLINK;
  return FileType.OTHER;
}

/** "a FIFO (named pipe)", "a Unix socket", … : what a file is, for messages. */
export function kindOf(st: Stats): string {
  if (st.isFile()) return "a regular file";
  if (st.isDirectory()) return "a directory";
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isSocket()) return "a Unix socket";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "a special file";
}

/**
 * Streams a directory's entries with their names as bytes (direntName), a
 * few hundred per system call. (Node accepts encoding "buffer" here; its
 * typings only list text encodings.)
 */
export function openDirBytes(dir: PathLike, bufferSize = 256): Promise<Dir> {
  return fs.opendir(dir, { encoding: "buffer" as BufferEncoding, bufferSize });
}

/** A Dirent's name as bytes (directories are read with encoding "buffer"). */
export function direntName(d: Dirent): Buffer {
  const name: unknown = d.name;
  return Buffer.isBuffer(name) ? name : Buffer.from(String(name), "utf8");
}

/**
 * Describes `abs` from its lstat `st` (not following a symlink): `reportedPath` is what
 * the reply calls it, `name` its last component. Text fields that are not UTF-8 get
 * their bytes beside them. A symlink's target is read with a synchronous readlink (see
 * fd.ts for why such calls are made synchronously).
 */
export function describe(abs: FsPath, reportedPath: Buffer, name: Buffer, st: Stats): FileInfoInit {
  const p = textAndBytes(reportedPath);
  const n = textAndBytes(name);
  const info: FileInfoInit = {
    path: p.text,
    pathBytes: p.bytes,
    name: n.text,
    nameBytes: n.bytes,
    type: fileTypeOf(st),
    mode: st.mode & 0o7777,
    size: BigInt(st.size),
    mtimeMs: BigInt(Math.trunc(st.mtimeMs)),
  };
  if (st.isSymbolicLink()) {
    const target = textAndBytes(fsSync.readlinkSync(abs.bytes, { encoding: "buffer" }));
    info.symlinkTarget = target.text;
    info.symlinkTargetBytes = target.bytes;
  }
  return info;
}

/** A listed entry whose absolute path is over PATH_MAX: no system call can name it, so no lstat. */
export function describeUnreachable(reportedPath: Buffer, name: Buffer, type: FileType): FileInfoInit {
  const p = textAndBytes(reportedPath);
  const n = textAndBytes(name);
  return { path: p.text, pathBytes: p.bytes, name: n.text, nameBytes: n.bytes, type, pathTooLong: true };
}

function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}

function lengthDelimited(byteLength: number): number {
  return byteLength === 0 ? 0 : 1 + varintBytes(byteLength) + byteLength;
}

/**
 * An upper bound of the bytes `info` takes as one element of a repeated
 * FileInfo field, measured on what goes on the wire (text as UTF-8, lossy
 * forms included), so a page can be cut before it outgrows a message.
 */
export function fileInfoWireBytes(info: FileInfoInit): number {
  const text = (s: string | undefined) => lengthDelimited(s ? Buffer.byteLength(s, "utf8") : 0);
  const bytes = (b: Uint8Array | undefined) => lengthDelimited(b?.byteLength ?? 0);
  // type, mode, size, mtime_ms and path_too_long: a tag and at most 10 bytes each.
  const fixed = 5 * 11;
  const body =
    text(info.path) + text(info.name) + text(info.symlinkTarget) +
    bytes(info.pathBytes) + bytes(info.nameBytes) + bytes(info.symlinkTargetBytes) + fixed;
  return 1 + varintBytes(body) + body;
}
