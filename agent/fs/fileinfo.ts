// FileInfo from lstat results, shared by Stat and ListDir.
import type { Stats } from "node:fs";
import fs from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FileType, type FileInfoSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export type FileInfoInit = MessageInitShape<typeof FileInfoSchema>;

export function fileTypeOf(st: Stats): FileType {
  if (st.isFile()) return FileType.FILE;
  if (st.isDirectory()) return FileType.DIRECTORY;
  if (st.isSymbolicLink()) return FileType.SYMLINK;
  return FileType.OTHER;
}

/** Describes `absPath` (not following a symlink); `reportedPath` is what the reply calls it. */
export async function describe(absPath: string, reportedPath: string, name: string, st: Stats): Promise<FileInfoInit> {
  return {
    path: reportedPath,
    name,
    type: fileTypeOf(st),
    mode: st.mode & 0o7777,
    size: BigInt(st.size),
    mtimeMs: BigInt(Math.trunc(st.mtimeMs)),
    symlinkTarget: st.isSymbolicLink() ? await fs.readlink(absPath) : "",
  };
}
