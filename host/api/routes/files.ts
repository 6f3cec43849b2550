// The file manager (Memoh's routes): stat, list, read a line window, download (with
// ETag and Range; read by the server from the agent's handed-off file, or streamed from
// ReadRaw), write, upload (multipart streamed into WriteRaw, never buffered whole),
// mkdir, delete, rename. Paths are the agent's: relative ones resolve against /data.
// One module for the family: the routes share the path schema, the file view and the
// errors; most of it is the download (symlinks followed, Range, backpressure).
import { Type } from "@sinclair/typebox";
import type { FileInfo } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { FileType } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import fs from "node:fs";
import type { ServerResponse } from "node:http";
import { writeWithBackpressure } from "../drain.js";
import { ApiError } from "../errors.js";
import { multipartFile } from "../multipart.js";
import type { ApiApp, RouteContext } from "../server.js";
import { FS_WRITE_BODY_LIMIT, FS_WRITE_MAX_BYTES } from "../server.js";
import { BotParams, ErrorResponse, WorkspacePath } from "../schemas.js";

const TYPE_NAMES: Record<FileType, string> = {
  [FileType.UNSPECIFIED]: "unknown",
  [FileType.FILE]: "file",
  [FileType.DIRECTORY]: "directory",
  [FileType.SYMLINK]: "symlink",
  [FileType.OTHER]: "other",
};

export const FileView = Type.Object({
  path: Type.String(),
  name: Type.String(),
  type: Type.String({ description: "file, directory, symlink or other" }),
  mode: Type.Integer(),
  size: Type.Number(),
  mtime: Type.String({ description: "ISO 8601" }),
  symlink_target: Type.Union([Type.String(), Type.Null()]),
});

export function fileView(f: FileInfo | undefined) {
  if (f === undefined) throw new ApiError("internal", "the agent answered without file info");
  return {
    path: f.path,
    name: f.name,
    type: TYPE_NAMES[f.type] ?? "unknown",
    mode: f.mode,
    size: Number(f.size),
    mtime: isoTime(Number(f.mtimeMs)),
    symlink_target: f.type === FileType.SYMLINK ? f.symlinkTarget : null,
  };
}

/**
 * A file time as ISO 8601. A filesystem can hold times a Date cannot show (touch -d
 * @1e14 on tmpfs): those are clamped to the Date range, so one such file does not fail a
 * whole listing.
 */
export function isoTime(ms: number): string {
  const MAX_DATE_MS = 8.64e15;
  return new Date(Number.isFinite(ms) ? Math.max(-MAX_DATE_MS, Math.min(MAX_DATE_MS, ms)) : 0).toISOString();
}

/** Symlinks a download follows at the end of its path, as open(2) would. */
const MAX_SYMLINK_HOPS = 40;

const bytesOf = (bytes: Uint8Array, text: string): Buffer => (bytes.length > 0 ? Buffer.from(bytes) : Buffer.from(text, "utf8"));

/**
 * The regular file a download of `path` reads, with its info: symlinks at the end of the
 * path are followed (the agent's Stat describes a link, it does not follow it), relative
 * targets against the link's directory. A directory, a FIFO, a socket or a device is
 * refused before anything is sent.
 */
async function downloadTarget(manager: RouteContext["manager"], botId: string, path: string): Promise<{ info: FileInfo; at: string | Uint8Array }> {
  let at: string | Uint8Array = path;
  for (let hop = 0; ; hop++) {
    const info = (await manager.call(botId, (c) => c.stat(at))).info;
    if (info === undefined) throw new ApiError("internal", "the agent answered without file info");
    if (info.type === FileType.FILE) return { info, at };
    if (info.type === FileType.DIRECTORY) throw new ApiError("invalid_argument", `${path} is a directory`);
    if (info.type !== FileType.SYMLINK) throw new ApiError("conflict", `${path} is not a regular file (it is a FIFO, a socket or a device)`);
    if (hop === MAX_SYMLINK_HOPS) throw new ApiError("invalid_argument", `${path}: too many levels of symbolic links`);
    const link = bytesOf(info.pathBytes, info.path);
    const target = bytesOf(info.symlinkTargetBytes, info.symlinkTarget);
    at = target[0] === 0x2f ? target : Buffer.concat([link.subarray(0, link.lastIndexOf(0x2f) + 1), target]);
  }
}

/**
 * Downloads of at least this many bytes ask the agent for a handoff (the server reads
 * the file itself); smaller ones stream through ReadRaw, which answers in one round
 * trip where the handoff takes a containerd call and a few /proc reads on top.
 */
export const HANDOFF_MIN_BYTES = 1024 * 1024;

/** Bytes the server reads from a handed-off file at a time. */
const SEND_BLOCK_BYTES = 1024 * 1024;

/**
 * Sends `length` bytes of the open file `fd` from `start` into `res`, with backpressure
 * (drain.ts), telling `onSent` each block's size. Sends fewer when the
 * file ended early (it shrank while it was read); a file that grew is cut at `length`.
 *
 * A block's buffer is read into again once the socket took it (with the backpressure
 * above, two or three buffers per download). With a new 1 MiB buffer per block the
 * server's garbage collector took more of its CPU profile than its socket writes (1.4 s
 * against 0.6 s over six downloads), and in the server's heap a collection costs more
 * than in a bare process: with curl as the client the download ran at 593 MiB/s against
 * 1,296 for a bare node:http
 * server reading the same file, and 1,473 once the buffers were reused (medians of 10
 * interleaved rounds each).
 */
async function sendFileRange(fd: number, start: number, length: number, res: ServerResponse, idleMs: number, onSent: (bytes: number) => void): Promise<void> {
  let sent = 0;
  const spare: Buffer[] = [];
  while (sent < length) {
    const buf = spare.pop() ?? Buffer.allocUnsafe(SEND_BLOCK_BYTES);
    const want = Math.min(SEND_BLOCK_BYTES, length - sent);
    const n = await new Promise<number>((resolve, reject) => fs.read(fd, buf, 0, want, start + sent, (err, bytes) => (err ? reject(err) : resolve(bytes))));
    if (n === 0) break;
    sent += n;
    onSent(n);
    const full = writeWithBackpressure(res, n === buf.length ? buf : buf.subarray(0, n), idleMs, () => spare.push(buf));
    if (full) await full;
  }
}

const PathQuery = Type.Object({ path: WorkspacePath }, { additionalProperties: false });
const Ok = Type.Object({ ok: Type.Boolean() });

/** A weak validator: same size and modification time is treated as the same content. */
function etagOf(size: bigint, mtimeMs: bigint): string {
  return `W/"${size.toString(16)}-${mtimeMs.toString(16)}"`;
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` against a size; undefined for no/unsupported Range, "unsatisfiable" when out of bounds. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | "unsatisfiable" | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined; // several ranges or garbage: the whole file
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}

export function registerFileRoutes(app: ApiApp, ctx: RouteContext): void {
  const { manager } = ctx;

  app.get(
    "/bots/:bot_id/container/fs",
    { config: { access: "bot" }, schema: { summary: "Stat a path", params: BotParams, querystring: PathQuery, response: { 200: FileView, "4xx": ErrorResponse } } },
    async (req) => fileView((await manager.call(req.params.bot_id, (c) => c.stat(req.query.path))).info),
  );

  app.get(
    "/bots/:bot_id/container/fs/list",
    {
      config: { access: "bot" },
      schema: {
        summary: "List a directory (sorted; recursive with depth; paged)",
        params: BotParams,
        querystring: Type.Object(
          {
            path: WorkspacePath,
            recursive: Type.Optional(Type.Boolean({ default: false })),
            depth: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, default: 0 })),
            offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1, default: 0 })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 1000 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ entries: Type.Array(FileView), total: Type.Integer(), has_more: Type.Boolean() }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const q = req.query;
      const res = await manager.call(req.params.bot_id, (c) =>
        c.listDir({ path: q.path, recursive: q.recursive ?? false, maxDepth: q.depth ?? 0, offset: q.offset ?? 0, limit: q.limit ?? 1000 }),
      );
      return { entries: res.entries.map(fileView), total: res.total, has_more: res.hasMore };
    },
  );

  app.get(
    "/bots/:bot_id/container/fs/read",
    {
      config: { access: "bot" },
      // The schema's serializer tests every string of 42 to 5,000 characters against
      // a regular expression before it hands it to JSON.stringify anyway: for a
      // window of file text that scan was 1.2% of the server's CPU at 64 reads in
      // flight. The handler builds exactly the documented object, so V8's own
      // JSON.stringify writes it, and the error object of a 4xx reply alike.
      serializerCompiler: () => (data: unknown) => JSON.stringify(data),
      schema: {
        summary: "Read a window of lines of a text file",
        params: BotParams,
        querystring: Type.Object(
          {
            path: WorkspacePath,
            offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 32 - 1, default: 0, description: "first line, 0-based" })),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, default: 2000 })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ content: Type.String(), total_lines: Type.Integer(), line_offset: Type.Integer(), line_count: Type.Integer(), truncated: Type.Boolean(), binary: Type.Boolean(), size: Type.Number() }),
          "4xx": ErrorResponse,
        },
      },
    },
    async (req) => {
      const r = await manager.call(req.params.bot_id, (c) => c.readFile({ path: req.query.path, lineOffset: req.query.offset ?? 0, lineLimit: req.query.limit ?? 2000 }));
      return { content: r.content, total_lines: r.totalLines, line_offset: r.lineOffset, line_count: r.lineCount, truncated: r.truncated, binary: r.binary, size: Number(r.size) };
    },
  );

  app.get(
    "/bots/:bot_id/container/fs/download",
    { config: { access: "bot" }, schema: { summary: "Download a file (streamed; ETag; Range → 206/416)", params: BotParams, querystring: PathQuery } },
    async (req, reply) => {
      const botId = req.params.bot_id;
      // A client gone while the file is looked up reads nothing from the agent.
      const gone = new AbortController();
      reply.raw.on("close", () => gone.abort());
      const { info, at } = await downloadTarget(manager, botId, req.query.path);
      const size = Number(info.size);
      const etag = etagOf(info.size, info.mtimeMs);
      const name = info.name || "download";
      void reply.header("etag", etag).header("accept-ranges", "bytes").header("last-modified", new Date(isoTime(Number(info.mtimeMs))).toUTCString());
      void reply.header("content-disposition", `attachment; filename*=UTF-8''${encodeURIComponent(name)}`);
      if (req.headers["if-none-match"] === etag) return reply.code(304).send();
      const ifRange = req.headers["if-range"];
      const range = ifRange !== undefined && ifRange !== etag ? undefined : parseRange(req.headers.range, size);
      if (range === "unsatisfiable") {
        return reply.code(416).header("content-range", `bytes */${size}`).send({ error: { code: "invalid_argument", message: `range ${req.headers.range} is outside the file's ${size} bytes` } });
      }
      const start = range?.start ?? 0;
      const length = range ? range.end - range.start + 1 : size;
      const res = reply.raw;
      // The head goes out with the first bytes: until then a failure (the file cannot be
      // opened, or changed size since the stat) is an ordinary JSON error answer.
      const writeHead = () => {
        reply.hijack();
        res.writeHead(range ? 206 : 200, {
          ...(reply.getHeaders() as Record<string, string>),
          "content-type": "application/octet-stream",
          "content-length": String(length),
          ...(range ? { "content-range": `bytes ${range.start}-${range.end}/${size}` } : {}),
        });
      };
      // HEAD (Fastify answers it with this GET handler) learns the headers; nothing is read.
      if (length === 0 || req.method === "HEAD") {
        writeHead();
        res.end();
        return reply;
      }
      let sent = 0;
      let opened: number | undefined;
      const onFileSize = (n: number) => void (opened = n);
      const changed = () => new ApiError("conflict", `${req.query.path} changed while it was read (${opened} bytes when opened, ${size} before)`);
      // A larger file is read by the server itself from the agent's open descriptor
      // (handoff): its bytes do not cross the agent's socket. Anything that keeps the
      // handoff from working falls back to ReadRaw's stream below.
      if (length >= HANDOFF_MIN_BYTES) {
        const direct = await manager.openFile(botId, at, { offset: start, length }, { signal: gone.signal });
        if ("fd" in direct) {
          opened = direct.fileSize;
          if (opened !== size) {
            fs.close(direct.fd, () => undefined);
            throw changed();
          }
          try {
            writeHead();
            await sendFileRange(direct.fd, start, length, res, ctx.streamIdleMs, (n) => (sent += n));
            if (sent !== length) throw new ApiError("conflict", `${req.query.path} changed while it was read (${sent} of ${length} bytes)`);
            res.end();
          } catch (err) {
            req.log.info({ err: String(err) }, "download ended early");
            res.destroy();
          } finally {
            fs.close(direct.fd, () => undefined);
            ctx.metrics.observeDownload("handoff", sent);
          }
          return reply;
        }
        req.log.debug({ reason: direct.refused }, "download streamed through ReadRaw");
      }
      try {
        await manager.call(botId, async (c) => {
          try {
            for await (const chunk of c.readRaw(at, { offset: start, length, onFileSize }, { signal: gone.signal, timeoutMs: 24 * 3600_000 })) {
              if (sent === 0) {
                if (opened !== size) throw changed();
                writeHead();
              }
              sent += chunk.length;
              // Up to 1 MiB may queue in the socket before this waits: waiting at the
              // response's 16 KiB mark stalled every 64 KiB chunk (downloads at 56% of ReadRaw).
              const full = writeWithBackpressure(res, chunk, ctx.streamIdleMs);
              if (full) await full;
            }
          } catch (err) {
            // Once bytes went out, a retry would send them again: never retried.
            if (sent > 0) throw new ApiError("unavailable", `download of ${req.query.path} broke off after ${sent} bytes`, { cause: err });
            throw err;
          }
        });
        if (sent !== length) throw new ApiError("conflict", `${req.query.path} changed while it was read (${sent} of ${length} bytes)`);
        res.end();
      } catch (err) {
        if (sent === 0) throw err;
        req.log.info({ err: String(err) }, "download ended early");
        res.destroy();
      } finally {
        ctx.metrics.observeDownload("stream", sent);
      }
      return reply;
    },
  );

  app.post(
    "/bots/:bot_id/container/fs/write",
    {
      config: { access: "bot" },
      bodyLimit: FS_WRITE_BODY_LIMIT,
      schema: {
        summary: "Write a file (parents created, atomic); content utf8 or base64, at most 16 MiB",
        params: BotParams,
        body: Type.Object(
          { path: WorkspacePath, content: Type.String({ maxLength: FS_WRITE_BODY_LIMIT }), encoding: Type.Optional(Type.Union([Type.Literal("utf8"), Type.Literal("base64")])), mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })) },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ path: Type.String(), bytes: Type.Integer() }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const b = req.body;
      let data: Buffer;
      if (b.encoding === "base64") {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b.content) || b.content.length % 4 === 1) throw new ApiError("invalid_argument", "content is not valid base64");
        data = Buffer.from(b.content, "base64");
      } else data = Buffer.from(b.content, "utf8");
      if (data.length > FS_WRITE_MAX_BYTES) throw new ApiError("payload_too_large", `content is ${data.length} bytes; fs/write takes at most ${FS_WRITE_MAX_BYTES} (use fs/upload for larger files)`);
      await manager.call(req.params.bot_id, (c) => c.writeFile(b.path, data, b.mode ?? 0));
      return { path: b.path, bytes: data.length };
    },
  );

  app.post(
    "/bots/:bot_id/container/fs/upload",
    {
      config: { access: "bot" },
      schema: {
        summary: "Upload a file (multipart/form-data: a `path` field, then the file; or ?path=), streamed",
        params: BotParams,
        querystring: Type.Object({ path: Type.Optional(WorkspacePath) }, { additionalProperties: false }),
        consumes: ["multipart/form-data"],
        response: { 200: Type.Object({ path: Type.String(), bytes: Type.Number(), sha256: Type.String() }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      if (!req.isMultipart()) throw new ApiError("invalid_argument", "fs/upload takes multipart/form-data with a `path` field and one file");
      const part = await multipartFile(req);
      const field = part.fields.path;
      const fieldValue = field !== undefined && !Array.isArray(field) && field.type === "field" ? String(field.value) : undefined;
      const target = req.query.path ?? fieldValue;
      if (target === undefined || target === "" || target.includes("\0") || target.length > 4096) {
        part.file.resume();
        throw new ApiError("invalid_argument", "name the target with a `path` field before the file (or ?path=)");
      }
      const file = part.file;
      let tooLarge = false;
      file.on("limit", () => (tooLarge = true));
      async function* chunks(): AsyncGenerator<Uint8Array> {
        try {
          for await (const chunk of file) {
            if (tooLarge) throw new ApiError("payload_too_large", `the upload is larger than ${ctx.uploadMaxBytes ?? 4 * 1024 ** 3} bytes`);
            yield chunk as Buffer;
          }
        } catch (err) {
          if (err instanceof ApiError) throw err;
          // The client's body ended early or is malformed: nothing is written (WriteRaw is cancelled).
          throw new ApiError("invalid_argument", `the upload broke off: ${(err as Error).message}`, { cause: err });
        }
        if (tooLarge || file.truncated) throw new ApiError("payload_too_large", `the upload is larger than ${ctx.uploadMaxBytes ?? 4 * 1024 ** 3} bytes`);
      }
      // Streams are not retried (a WriteRaw is not idempotent): the manager never re-runs it.
      const r = await manager.call(req.params.bot_id, (c) => c.writeRaw(target, chunks(), { timeoutMs: 24 * 3600_000 }));
      return { path: target, bytes: r.bytesWritten, sha256: r.sha256 };
    },
  );

  app.post(
    "/bots/:bot_id/container/fs/mkdir",
    {
      config: { access: "bot" },
      schema: { summary: "Create a directory (with parents)", params: BotParams, body: Type.Object({ path: WorkspacePath, parents: Type.Optional(Type.Boolean({ default: true })) }, { additionalProperties: false }), response: { 200: Ok, "4xx": ErrorResponse } },
    },
    async (req) => {
      await manager.call(req.params.bot_id, (c) => c.mkdir(req.body.path, req.body.parents ?? true));
      return { ok: true };
    },
  );

  app.post(
    "/bots/:bot_id/container/fs/delete",
    {
      config: { access: "bot" },
      schema: { summary: "Delete a file or (recursive) a directory", params: BotParams, body: Type.Object({ path: WorkspacePath, recursive: Type.Optional(Type.Boolean({ default: false })) }, { additionalProperties: false }), response: { 200: Ok, "4xx": ErrorResponse } },
    },
    async (req) => {
      await manager.call(req.params.bot_id, (c) => c.deleteFile(req.body.path, req.body.recursive ?? false));
      return { ok: true };
    },
  );

  app.post(
    "/bots/:bot_id/container/fs/rename",
    {
      config: { access: "bot" },
      schema: {
        summary: "Rename or move",
        params: BotParams,
        body: Type.Object({ from: WorkspacePath, to: WorkspacePath, overwrite: Type.Optional(Type.Boolean({ default: false })) }, { additionalProperties: false }),
        response: { 200: Ok, "4xx": ErrorResponse },
      },
    },
    async (req) => {
      await manager.call(req.params.bot_id, (c) => c.rename(req.body.from, req.body.to, req.body.overwrite ?? false));
      return { ok: true };
    },
  );
}
