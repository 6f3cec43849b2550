// The file manager's extract: a tar.gz unpacked into a folder of a running workspace. The
// archive is checked and unpacked on the host first (archive.ts, into a private staging
// dir under `<dataRoot>/tmp`), so a refused archive writes nothing in the workspace; the
// checked tree then goes in through the agent (Mkdir, WriteRaw with the entry's mode).
// The agent has no call that makes a symlink: symlinks are reported as skipped.
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import type { BridgeClient } from "../bridge/client.js";
import type { WorkspaceContext } from "../workspace/context.js";
import type { ArchiveLimits } from "./archive.js";
import { removeTree } from "./import.js";
import { extractArchive, type ExtractResult } from "./archive-read.js";
import { child, openForChildren, shortName } from "./raw-names.js";

/** The longest absolute path a call of the agent takes. */
const PATH_MAX_BYTES = 4095;

export async function extractInto(
  ctx: WorkspaceContext,
  call: <T>(fn: (c: BridgeClient) => Promise<T>) => Promise<T>,
  dir: string,
  input: Readable | AsyncIterable<Uint8Array>,
  limits: ArchiveLimits | undefined,
): Promise<ExtractResult & { skipped: string[] }> {
  const tmpRoot = path.join(path.resolve(ctx.options.dataRoot), "tmp");
  fs.mkdirSync(tmpRoot, { recursive: true, mode: 0o700 });
  const staging = fs.mkdtempSync(path.join(tmpRoot, "extract-"));
  try {
    const result = await extractArchive(input, staging, limits ? { limits } : {});
    const skipped: string[] = [];
    await call(async (c) => {
      const base = dir.replace(/\/+$/, "") || "/";
      await c.mkdir(base, true);
      const baseBytes = Buffer.from(base === "/" ? "" : base);
      const slash = Buffer.from("/");
      // Names go to the agent as bytes (a name that is not UTF-8 stays what it was); the
      // staging tree is walked from open directories, so its depth does not matter here.
      const walk = async (abs: Buffer, rel: Buffer | undefined): Promise<void> => {
        const d = openForChildren(abs);
        try {
          for (const name of fs.readdirSync(d.path, { encoding: "buffer" }).sort(Buffer.compare)) {
            const a = child(d.path, name);
            const r = rel === undefined ? name : Buffer.concat([rel, slash, name]);
            const target = Buffer.concat([baseBytes, slash, r]);
            const st = fs.lstatSync(a);
            if (target.byteLength > PATH_MAX_BYTES) {
              skipped.push(`${shortName(r)}: its path is longer than PATH_MAX, which no call of the agent can name (not extracted)`);
              continue;
            }
            if (st.isDirectory()) {
              await c.mkdir(target, true);
              await walk(a, r);
            } else if (st.isFile()) {
              const fd = fs.openSync(a, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
              await c.writeRaw(target, fs.createReadStream("", { fd }), { mode: st.mode & 0o777, timeoutMs: 3600_000 });
            } else skipped.push(`${shortName(r)}: ${st.isSymbolicLink() ? "a symlink" : "not a regular file"} (not extracted)`);
          }
        } finally {
          d.release();
        }
      };
      await walk(Buffer.from(staging), undefined);
    });
    return { ...result, skipped };
  } finally {
    await removeTree(staging);
  }
}
