// Import: a tar.gz replaces the workspace's /data, all or nothing.
//
// The swap happens on the host, on the workspace's rootfs snapshot mounted writable while
// its task is paused (a running workspace is stopped for the import and started again;
// its processes would otherwise see files change under them). The archive is streamed
// into `/.memoh-import/new` beside /data (same filesystem) and checked entry by entry
// (archive.ts); any refusal removes the staging tree and /data is untouched. Then:
//
//   state "out": every entry of /data moves into /.memoh-import/old
//   state "in":  every entry of /.memoh-import/new moves into /data
//   state "done": /.memoh-import goes
//
// The state file is written (fsync) before each phase. A crash leaves a state that
// repairSwap() finishes: no state → throw the staging away (before); "out" → move the
// old entries back (before); "in" → move the rest of the new entries in (after);
// "done" → clean up (after). /data is never a mix once repaired.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import type { WorkspaceContext } from "../workspace/context.js";
import { WorkspaceError, describeError } from "../workspace/errors.js";
import { startTask } from "../workspace/start.js";
import type { ArchiveLimits, ArchiveProgress } from "./archive.js";
import { extractArchive, type ExtractResult } from "./archive-read.js";
import { child, shownName, utf8OrUndefined } from "./raw-names.js";
import {
  checkDataDir,
  crashPoint,
  fsyncDir,
  mountRootfs,
  pauseTask,
  removeJournal,
  rootfsOf,
  taskRunning,
  writeDurable,
  writeJournal,
  type DataOp,
  type MountedRootfs,
} from "./workspace-fs.js";

const runFile = promisify(execFile);

export const STAGING_DIR = ".memoh-import";

export interface ImportOptions {
  limits?: ArchiveLimits;
  onProgress?: (p: ArchiveProgress) => void;
}

function staging(root: string) {
  const base = path.join(root, STAGING_DIR);
  return { base, next: path.join(base, "new"), old: path.join(base, "old"), state: path.join(base, "state") };
}

/** The names in a directory as bytes: a name that is not UTF-8 must be moved by its bytes, not by a lossy text form. */
function namesOf(dir: string): Buffer[] {
  return fs.readdirSync(dir, { encoding: "buffer" });
}

/**
 * Removes a tree of any depth: Node's recursive rm names every entry by its full path and
 * stops at one longer than PATH_MAX (ENAMETOOLONG), which rm(1) walks from open directories.
 */
export async function removeTree(p: string): Promise<void> {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENAMETOOLONG") throw err;
    await runFile("rm", ["-rf", "--", p]);
  }
}

/**
 * mv(1) of `from/name` to `to/name`. execFile's arguments are text, so a name that is not
 * UTF-8 would reach mv changed: the paths go as printf octal escapes the shell turns back
 * into the exact bytes (the "x" keeps a trailing newline of a name from being cut).
 */
async function mvByName(from: string, to: string, name: Buffer): Promise<void> {
  if (utf8OrUndefined(name) !== undefined) {
    await runFile("mv", ["-T", "--", path.join(from, name.toString("utf8")), path.join(to, name.toString("utf8"))]);
    return;
  }
  const esc = (b: Buffer) => [...b].map((c) => `\\${c.toString(8).padStart(3, "0")}`).join("");
  const script = 'src=$(printf "$1"; echo x); dst=$(printf "$2"; echo x); exec mv -T -- "${src%x}" "${dst%x}"';
  await runFile("sh", ["-c", script, "sh", esc(child(Buffer.from(from), name)), esc(child(Buffer.from(to), name))]);
}

/** Moves every entry of `from` into `to` (renames; a lower-layer directory overlayfs will not rename is moved by mv). */
async function moveAll(from: string, to: string, afterFirst?: () => void): Promise<void> {
  if (!fs.existsSync(from)) return;
  let first = true;
  for (const name of namesOf(from)) {
    if (!first) afterFirst?.();
    first = false;
    const src = child(Buffer.from(from), name);
    const dst = child(Buffer.from(to), name);
    try {
      fs.renameSync(src, dst);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
      await mvByName(from, to, name);
    }
  }
  fsyncDir(from);
  fsyncDir(to);
}

/** Whether `p` is a real directory (never a link): false when missing, a conflict when something else. */
function realDir(p: string, what: string): boolean {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
  if (!st.isDirectory()) throw new WorkspaceError("conflict", `the swap of /data cut short cannot be repaired: ${what} is not a directory`);
  return true;
}

/**
 * Moving back what a swap cut short moved must never replace anything: names that /data
 * holds as well were made by the workspace running on the half-swapped /data (which
 * repairing before every start prevents). Refused as a whole before anything moves, so
 * the journal and the staging stay and nothing is lost.
 */
function refuseClashes(from: string, to: string, where: string): void {
  if (!fs.existsSync(from)) return;
  const clashing = namesOf(from).filter((name) => {
    try {
      fs.lstatSync(child(Buffer.from(to), name));
      return true;
    } catch {
      return false;
    }
  });
  if (clashing.length === 0) return;
  const shown = clashing.slice(0, 10).map((n) => JSON.stringify(shownName(n))).join(", ");
  throw new WorkspaceError(
    "conflict",
    `the swap of /data cut short cannot be repaired without replacing data: /data holds ${shown}${clashing.length > 10 ? ` and ${clashing.length - 10} more` : ""}, ` +
      `which ${where} also holds; nothing was moved (the workspace stays stopped until they are moved out of /data in its rootfs, or it is deleted)`,
  );
}

/** Finishes or undoes a swap that was cut short in the mounted rootfs `root`; see the top of this file. */
export async function repairSwap(root: string): Promise<"clean" | "before" | "after"> {
  const s = staging(root);
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(s.base);
  } catch {
    return "clean";
  }
  if (!st.isDirectory()) {
    fs.rmSync(s.base, { force: true }); // not a directory
    return "clean";
  }
  const state = fs.existsSync(s.state) ? fs.readFileSync(s.state, "utf8").trim() : "";
  const data = path.join(root, "data");
  // Paths on the host mount: a link in their place would lead the moves out of the rootfs.
  const hasData = realDir(data, "/data");
  let outcome: "before" | "after";
  if (state === "out") {
    if (realDir(s.old, `/${STAGING_DIR}/old`)) {
      if (hasData) refuseClashes(s.old, data, `/${STAGING_DIR}/old (moved aside by the cut-short swap)`);
      else fs.mkdirSync(data, { mode: 0o755 });
      await moveAll(s.old, data);
    }
    outcome = "before";
  } else if (state === "in") {
    if (realDir(s.next, `/${STAGING_DIR}/new`)) {
      if (hasData) refuseClashes(s.next, data, `/${STAGING_DIR}/new (the archive being swapped in)`);
      else fs.mkdirSync(data, { mode: 0o755 });
      await moveAll(s.next, data);
    }
    outcome = "after";
  } else outcome = state === "done" ? "after" : "before";
  await removeTree(s.base);
  fsyncDir(root);
  return outcome;
}

/** Stages the archive beside /data of the mounted rootfs, then swaps it in (see the top of this file). */
export async function importIntoRootfs(m: MountedRootfs, input: Readable | AsyncIterable<Uint8Array>, opts: ImportOptions = {}): Promise<ExtractResult> {
  await repairSwap(m.root);
  checkDataDir(m, true);
  const s = staging(m.root);
  fs.mkdirSync(s.base, { mode: 0o700 });
  fs.mkdirSync(s.next, { mode: 0o755 });
  // /data keeps its owner unless the archive's root entry (".") names another.
  const current = fs.statSync(m.data);
  fs.chownSync(s.next, current.uid, current.gid);
  let result: ExtractResult;
  try {
    result = await extractArchive(input, s.next, opts);
  } catch (err) {
    await removeTree(s.base);
    throw err;
  }
  // The staged tree is on disk before the old one moves out.
  await runFile("sync", ["-f", s.next]).catch(() => undefined);
  // The archive's own root entry (".") gave the staging dir its owner, mode and mtime: /data takes them.
  const rootStat = fs.statSync(s.next);
  fs.mkdirSync(s.old, { mode: 0o700 });
  crashPoint("import:staged");
  writeDurable(s.state, "out");
  await moveAll(m.data, s.old, () => crashPoint("import:out"));
  writeDurable(s.state, "in");
  await moveAll(s.next, m.data, () => crashPoint("import:in"));
  fs.chownSync(m.data, rootStat.uid, rootStat.gid);
  fs.chmodSync(m.data, rootStat.mode & 0o7777);
  fs.utimesSync(m.data, rootStat.atime, rootStat.mtime);
  writeDurable(s.state, "done");
  await removeTree(s.base);
  fsyncDir(m.root);
  return result;
}

/**
 * Runs `fn` with the workspace's rootfs mounted writable on the host: the task is paused
 * first (and started again afterwards when it ran), the journal names the operation.
 * Callers hold the bot's lock.
 */
export async function withWritableRootfs<T>(ctx: WorkspaceContext, botId: string, containerId: string, op: DataOp, fn: (m: MountedRootfs) => Promise<T>): Promise<T> {
  const { key, snapshotter } = await rootfsOf(ctx, containerId);
  const wasRunning = await taskRunning(ctx, containerId);
  writeJournal(ctx, { op, botId, containerId, startedAt: new Date().toISOString() });
  if (wasRunning) await pauseTask(ctx, botId, containerId);
  else await ctx.cd.tasks.stop(containerId, 0); // a stopped task of an earlier run holds the rootfs mounted
  let result: T;
  let failure: unknown;
  const m = await mountRootfs(ctx, botId, key, snapshotter, true);
  try {
    result = await fn(m);
  } catch (err) {
    failure = err;
  }
  await m.release();
  removeJournal(ctx, botId);
  if (wasRunning) {
    try {
      await startTask(ctx, botId, containerId);
    } catch (err) {
      if (failure === undefined) throw err;
      ctx.log(`${botId}: starting again after a failed ${op}: ${describeError(err)}`);
    }
  }
  if (failure !== undefined) throw failure;
  return result!;
}

export interface SpooledArchive {
  path: string;
  /** What the checking pass found. */
  checked: ExtractResult;
  remove(): void;
}

/**
 * Receives an archive into a private file under `<dataRoot>/tmp` and checks all of it
 * (a dry run of the extract: every entry, the caps, the gzip) before anything is stopped
 * or touched; a refused archive never pauses the workspace. The input is drained, not
 * destroyed, when it is refused (its sender still gets an answer).
 */
export async function spoolArchive(ctx: WorkspaceContext, input: Readable | AsyncIterable<Uint8Array>, limits: ArchiveLimits | undefined): Promise<SpooledArchive> {
  const dir = path.join(path.resolve(ctx.options.dataRoot), "tmp");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `import-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.tar.gz`);
  const remove = () => fs.rmSync(file, { force: true });
  const cap = (limits?.maxBytes ?? 16 * 1024 ** 3) + 64 * 1024 * 1024;
  const source = (typeof (input as Readable).pipe === "function" ? input : (await import("node:stream")).Readable.from(input)) as Readable;
  const out = fs.createWriteStream(file, { mode: 0o600, flags: "wx" });
  try {
    await new Promise<void>((resolve, reject) => {
      let n = 0;
      const fail = (err: unknown) => {
        source.unpipe(out);
        source.resume();
        out.destroy();
        reject(err);
      };
      source.on("data", (chunk: Buffer) => {
        n += chunk.byteLength;
        if (n > cap) fail(new WorkspaceError("payload_too_large", `the archive is refused: it is larger than ${cap} bytes`));
      });
      source.once("error", (err) => fail(new WorkspaceError("invalid_argument", `the archive upload broke off: ${describeError(err)}`, { cause: err })));
      source.once("aborted", () => fail(new WorkspaceError("invalid_argument", "the archive upload broke off")));
      out.once("error", fail);
      out.once("finish", resolve);
      source.pipe(out);
    });
    const checked = await extractArchive(fs.createReadStream(file), undefined, limits ? { limits } : {});
    return { path: file, checked, remove };
  } catch (err) {
    remove();
    throw err;
  }
}

/** Import into the bot's existing workspace. Callers hold the bot's lock. */
export async function importData(ctx: WorkspaceContext, botId: string, input: Readable | AsyncIterable<Uint8Array>, opts: ImportOptions = {}): Promise<ExtractResult> {
  const row = await ctx.liveRow(botId);
  if (row === undefined || !(await ctx.containerExists(row.containerId))) throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
  const result = await withWritableRootfs(ctx, botId, row.containerId, "import", (m) => importIntoRootfs(m, input, opts));
  await ctx.store.recordEvent(row.containerId, "data_imported", { botId, entries: result.entries, bytes: result.bytes });
  return result;
}
