// `memoh-workspace cp`: files and directories between this machine and a workspace,
// streamed both ways (fs/download, multipart fs/upload, a recursive fs/list).
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { CliError, apiError, parseRemote, type ApiClient } from "./client.js";

interface ListEntry {
  path: string;
  type: string;
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

async function download(client: ApiClient, bot: string, remote: string, local: string): Promise<void> {
  const res = await client.raw("GET", `/bots/${bot}/container/fs/download?path=${encodeURIComponent(remote)}`);
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  fs.mkdirSync(path.dirname(local), { recursive: true });
  await pipeline(res.body, fs.createWriteStream(local));
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

/** `cp SRC DST`: one side BOT:/path, the other a local path; files and directories, streamed. */
export async function copy(client: ApiClient, src: string, dst: string): Promise<void> {
  const from = parseRemote(src);
  const to = parseRemote(dst);
  if ((from === undefined) === (to === undefined)) throw new CliError("cp copies between a workspace and this machine: one side is BOT:/path, the other a local path");
  if (from) {
    const info = await client.json<{ type: string }>("GET", `/bots/${from.bot}/container/fs?path=${encodeURIComponent(from.path)}`);
    if (info.type !== "directory") {
      const target = fs.existsSync(dst) && fs.statSync(dst).isDirectory() ? path.join(dst, path.posix.basename(from.path)) : dst;
      return download(client, from.bot, from.path, target);
    }
    fs.mkdirSync(dst, { recursive: true });
    for (const e of await listAll(client, from.bot, from.path)) {
      const local = path.join(dst, ...e.path.split("/"));
      if (e.type === "directory") fs.mkdirSync(local, { recursive: true });
      else if (e.type === "file") await download(client, from.bot, path.posix.join(from.path, e.path), local);
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
      if (entry.isDirectory()) {
        await client.json("POST", `/bots/${to!.bot}/container/fs/mkdir`, { path: remote });
        await walk(path.join(dir, entry.name), r);
      } else if (entry.isFile()) await upload(client, to!.bot, path.join(dir, entry.name), remote);
    }
  };
  await walk(src, "");
}
