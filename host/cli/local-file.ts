// Writing a local file that may already exist (cp's downloads, export --output): the
// bytes go to a temp file beside it, renamed over it once all of them arrived, so a
// transfer that breaks off (or Ctrl-C) leaves an existing file as it was and no temp
// file. The rename replaces what is at the path: a symlink there is replaced, not
// written through. An existing regular file's permission bits are kept (not set-id
// bits: the content is new); a new file gets `newMode`.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export interface ReplaceResult {
  /** Something was at the path before. */
  existed: boolean;
}

export async function replaceLocalFile(local: string, fill: (out: fs.WriteStream) => Promise<void>, newMode?: number): Promise<ReplaceResult> {
  const dir = path.dirname(local);
  // At most 32 characters of the name (128 bytes): a name near NAME_MAX plus the suffix
  // would not be a valid file name.
  const tmp = path.join(dir, `.${path.basename(local).slice(0, 32)}.memoh-${randomBytes(6).toString("hex")}.part`);
  let existed = false;
  let mode = newMode;
  try {
    const st = fs.lstatSync(local);
    existed = true;
    if (st.isFile()) mode = st.mode & 0o777;
  } catch {
    // nothing there yet
  }
  // Ctrl-C mid-transfer removes the temp file, then ends the process as the signal would.
  const onSignal = (signal: NodeJS.Signals) => {
    fs.rmSync(tmp, { force: true });
    process.kill(process.pid, signal);
  };
  process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
  let out: fs.WriteStream | undefined;
  try {
    fs.mkdirSync(dir, { recursive: true });
    out = fs.createWriteStream(tmp, { flags: "wx", ...(mode !== undefined ? { mode } : {}) });
    await fill(out);
    if (mode !== undefined) fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, local);
    return { existed };
  } catch (err) {
    out?.destroy();
    fs.rmSync(tmp, { force: true });
    throw Object.assign(err instanceof Error ? err : new Error(String(err)), { existed });
  } finally {
    process.off("SIGINT", onSignal).off("SIGTERM", onSignal);
  }
}
