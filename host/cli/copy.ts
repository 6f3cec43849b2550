// `memoh-workspace cp`: files and directories between this machine and a workspace,
// streamed both ways (fs/download, multipart fs/upload, a recursive fs/list).
//
// What the workspace answers is untrusted (its agent may be compromised): the paths of a
// listing are checked to stay under the local destination before anything is written,
// and a download replaces a local file only once all of its bytes have arrived.
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { CliError, apiError, parseRemote, type ApiClient } from "./client.js";
import { replaceLocalFile } from "./local-file.js";

interface ListEntry {
  path: string;
  type: string;
  symlink_target?: string | null;
}

/** Where skipped entries are reported (one line each); stderr in the command. */
export type Warn = (line: string) => void;

const stderrWarn: Warn = (line) => void process.stderr.write(`memoh-workspace: ${line}\n`);

/**
 * The local path of `rel` (a path relative to the copied directory, as a listing gives
 * it) under `dst`. Refused: an absolute path, an empty, "." or ".." component, a NUL, and
 * anything whose resolved path is not below `dst`, so no answer of the workspace can
 * name a file outside the destination.
 */
export function localPathFor(dst: string, rel: string): string {
  const refuse = (why: string) => new CliError(`refusing the workspace's entry ${JSON.stringify(rel)}: ${why}`);
  if (typeof rel !== "string" || rel === "") throw refuse("an empty path");
  if (rel.includes("\0")) throw refuse("a NUL in the path");
  if (rel.startsWith("/") || path.isAbsolute(rel)) throw refuse("an absolute path");
  const parts = rel.split("/");
  for (const part of parts) if (part === "" || part === "." || part === "..") throw refuse(`a ${JSON.stringify(part)} component`);
  const root = path.resolve(dst);
  const local = path.resolve(root, ...parts);
  if (!local.startsWith(root.endsWith(path.sep) ? root : root + path.sep)) throw refuse(`it resolves outside ${dst}`);
  return local;
}

async function listAll(client: ApiClient, bot: string, dir: string): Promise<ListEntry[]> {
  const all: ListEntry[] = [];
  for (let offset = 0; ; ) {
    const page = await client.json<{ entries: ListEntry[]; has_more: boolean }>("GET", `/bots/${bot}/container/fs/list?path=${encodeURIComponent(dir)}&recursive=true&offset=${offset}&limit=1000`);
    all.push(...page.entries);
    offset += page.entries.length;
    if (!page.has_more || page.entries.length === 0) return all;
  }
}

/** Downloads `remote` over `local` (local-file.ts: a broken download leaves `local` as it was). */
async function download(client: ApiClient, bot: string, remote: string, local: string): Promise<void> {
  const res = await client.raw("GET", `/bots/${bot}/container/fs/download?path=${encodeURIComponent(remote)}`);
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  try {
    await replaceLocalFile(local, (out) => pipeline(res.body, out));
  } catch (err) {
    res.body.destroy();
    const existed = (err as { existed?: boolean }).existed === true;
    throw new CliError(`download of ${bot}:${remote} to ${local} failed: ${(err as Error).message}; ${local} was ${existed ? "left unchanged" : "not created"}`);
  }
}

async function upload(client: ApiClient, bot: string, local: string, remote: string): Promise<void> {
  const boundary = `memoh${Date.now().toString(16)}${Math.random().toString(16).slice(2)}`;
  const head = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n${remote}\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path.basename(local).replace(/"/g, "")}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* body() {
    yield head;
    for await (const chunk of fs.createReadStream(local)) yield chunk as Buffer;
    yield tail;
  }
  const res = await client.raw("POST", `/bots/${bot}/container/fs/upload`, { body: Readable.from(body()), headers: { "content-type": `multipart/form-data; boundary=${boundary}` } });
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  await res.body.dump();
}

/** What a local directory entry that is neither a file nor a directory is, for a warning. */
function kindOf(entry: fs.Dirent): string {
  if (entry.isSymbolicLink()) return "a symlink";
  if (entry.isFIFO()) return "a FIFO";
  if (entry.isSocket()) return "a socket";
  if (entry.isBlockDevice() || entry.isCharacterDevice()) return "a device";
  return "not a regular file";
}

/**
 * `cp SRC DST`: one side BOT:/path, the other a local path; files and directories,
 * streamed. Entries of a directory that are neither files nor directories are skipped
 * with a warning each (the exit code stays 0):
 * - local symlinks and special files on the way up: the API has no call that makes a
 *   symlink, and a FIFO or device has no bytes to upload;
 * - the workspace's symlinks and special files on the way down: a link is not made here,
 *   because its target comes from the workspace and could point anywhere on this
 *   machine (and files copied after it would be written through it).
 */
export async function copy(client: ApiClient, src: string, dst: string, warn: Warn = stderrWarn): Promise<void> {
  const from = parseRemote(src);
  const to = parseRemote(dst);
  if ((from === undefined) === (to === undefined)) throw new CliError("cp copies between a workspace and this machine: one side is BOT:/path, the other a local path");
  if (from) {
    const info = await client.json<{ type: string }>("GET", `/bots/${from.bot}/container/fs?path=${encodeURIComponent(from.path)}`);
    if (info.type !== "directory") {
      const target = fs.existsSync(dst) && fs.statSync(dst).isDirectory() ? path.join(dst, path.posix.basename(from.path)) : dst;
      return download(client, from.bot, from.path, target);
    }
    // Every path is checked before anything is written: a listing with one bad entry
    // leaves the destination untouched.
    const entries = (await listAll(client, from.bot, from.path)).map((e) => ({ ...e, local: localPathFor(dst, e.path) }));
    fs.mkdirSync(dst, { recursive: true });
    for (const e of entries) {
      const remote = path.posix.join(from.path, e.path);
      if (e.type === "directory") fs.mkdirSync(e.local, { recursive: true });
      else if (e.type === "file") await download(client, from.bot, remote, e.local);
      else if (e.type === "symlink") warn(`skipped ${from.bot}:${remote}: a symlink (to ${JSON.stringify(e.symlink_target ?? "?")}); links are not copied`);
      else warn(`skipped ${from.bot}:${remote}: not a regular file or directory (${e.type})`);
    }
    return;
  }
  const st = fs.statSync(src);
  if (!st.isDirectory()) return upload(client, to!.bot, src, to!.path);
  await client.json("POST", `/bots/${to!.bot}/container/fs/mkdir`, { path: to!.path });
  const walk = async (dir: string, rel: string): Promise<void> => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      const remote = path.posix.join(to!.path, r);
      const local = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        await client.json("POST", `/bots/${to!.bot}/container/fs/mkdir`, { path: remote });
        await walk(local, r);
      } else if (entry.isFile()) await upload(client, to!.bot, local, remote);
      else warn(`skipped ${local}: ${kindOf(entry)}${entry.isSymbolicLink() ? "; links are not copied" : ""}`);
    }
  };
  await walk(src, "");
}
