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
import { extractArchive, type ExtractResult } from "./archive-read.js";

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
      const walk = async (abs: string, rel: string): Promise<void> => {
        for (const name of fs.readdirSync(abs).sort()) {
          const a = path.join(abs, name);
          const r = rel ? `${rel}/${name}` : name;
          const target = `${base}/${r}`;
          const st = fs.lstatSync(a);
          if (st.isDirectory()) {
            await c.mkdir(target, true);
            await walk(a, r);
          } else if (st.isFile()) {
            await c.writeRaw(target, fs.createReadStream(a), { mode: st.mode & 0o777, timeoutMs: 3600_000 });
          } else skipped.push(`${r}: ${st.isSymbolicLink() ? "a symlink" : "not a regular file"} (not extracted)`);
        }
      };
      await walk(staging, "");
    });
    return { ...result, skipped };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
