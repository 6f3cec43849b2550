// Workspace data routes: export /data as a streamed tar.gz, import one (raw gzip body or
// multipart, streamed), restore the preserved backup (JSON or an SSE stream of progress),
// versions (create, list, rollback, delete), and the file manager's folder archive and
// extract. The work is host/data/'s, behind the manager.
import type { IncomingMessage } from "node:http";
import { Writable, type Readable } from "node:stream";
import { Type } from "@sinclair/typebox";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { ArchiveProgress, ExtractResult, VersionInfo } from "../../workspace/manager.js";
import { ArchiveWriter, packBridgeTree } from "../../data/archive.js";
import { packReadTree } from "../../data/archive-tree.js";
import { FileType } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { waitDrain } from "../drain.js";
import { ApiError, toApiError } from "../errors.js";
import { multipartFile } from "../multipart.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams, ErrorResponse, WorkspacePath } from "../schemas.js";
import { SseStream } from "../sse.js";

const ImportResult = Type.Object({ entries: Type.Integer(), files: Type.Integer(), bytes: Type.Number() });

const VersionView = Type.Object({
  version: Type.Integer(),
  display_name: Type.String(),
  source: Type.String({ description: "manual, rollback or pre_exec" }),
  snapshot: Type.String(),
  parent: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
});

const versionView = (v: VersionInfo) => ({
  version: v.version,
  display_name: v.displayName,
  source: v.source,
  snapshot: v.snapshot,
  parent: v.parent,
  created_at: v.createdAt.toISOString(),
});

const importView = (r: ExtractResult) => ({ entries: r.entries, files: r.files, bytes: r.bytes });

export function acceptsEventStream(accept: string | undefined): boolean {
  return accept !== undefined && accept.split(",").some((part) => part.trim().split(";")[0] === "text/event-stream");
}

/**
 * Runs a data operation as an SSE stream: `<phase>` first, then `progress` events
 * ({phase, bytes, files}) at most every 250 ms, then `complete` with the result or `error`.
 */
export async function streamDataOp<T>(reply: FastifyReply, idleMs: number, phase: string, run: (onProgress: (p: ArchiveProgress) => void) => Promise<T>, result: (t: T) => unknown): Promise<FastifyReply> {
  const sse = new SseStream(reply, idleMs);
  sse.send(phase, {});
  try {
    const t = await run((p) => sse.send("progress", { phase, bytes: p.bytes, files: p.files }));
    sse.send("complete", result(t));
  } catch (err) {
    const e = toApiError(err);
    sse.send("error", { code: e.code, message: e.message });
  }
  sse.end();
  return reply;
}

/**
 * A Writable over the raw response that sends the headers with the first bytes: an error
 * before any byte is answered as a JSON error; after that the connection is cut.
 */
function lazyResponse(reply: FastifyReply, headers: Record<string, string>, idleMs: number): Writable & { started(): boolean } {
  let started = false;
  const res = reply.raw;
  const w = new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _enc, cb) {
      if (!started) {
        started = true;
        reply.hijack();
        res.writeHead(200, headers);
      }
      if (res.destroyed) return cb(new ApiError("unavailable", "the client went away"));
      if (res.write(chunk)) return cb();
      waitDrain(res, idleMs).then(() => cb(), cb);
    },
    final(cb) {
      if (!started) {
        started = true;
        reply.hijack();
        res.writeHead(200, headers);
      }
      res.end(cb);
    },
  }) as Writable & { started(): boolean };
  w.started = () => started;
  return w;
}

/** The archive in the request: a multipart file part, or the raw body (application/gzip or octet-stream). */
async function archiveBody(req: FastifyRequest): Promise<Readable> {
  if (req.isMultipart()) {
    return (await multipartFile(req)).file;
  }
  const body = req.body as unknown;
  if (body === undefined || body === null || typeof (body as Readable).pipe !== "function") {
    throw new ApiError("invalid_argument", "send the archive as the body (application/gzip) or as a multipart file");
  }
  return body as IncomingMessage;
}

export function registerDataRoutes(app: ApiApp, ctx: RouteContext): void {
  const { manager } = ctx;

  app.post(
    "/bots/:bot_id/container/data/export",
    { config: { access: "bot" }, schema: { summary: "/data as a tar.gz (application/gzip), streamed", params: BotParams, response: { "4xx": ErrorResponse, "5xx": ErrorResponse } } },
    async (req, reply) => {
      const botId = req.params.bot_id;
      const out = lazyResponse(reply, { "content-type": "application/gzip", "content-disposition": `attachment; filename="${botId}-data.tar.gz"` }, ctx.streamIdleMs);
      const gone = new AbortController();
      reply.raw.on("close", () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      try {
        await manager.exportData(botId, out, { signal: gone.signal });
      } catch (err) {
        if (!out.started()) throw err;
        req.log.info({ err: String(err) }, "export ended early");
        reply.raw.destroy();
      }
      return reply;
    },
  );

  void app.register(async (plain) => {
    const scope = plain.withTypeProvider<TypeBoxTypeProvider>();
    scope.addContentTypeParser(["application/gzip", "application/x-gzip", "application/octet-stream", "application/x-tar+gzip"], (_req, payload, done) => done(null, payload));

    scope.post(
      "/bots/:bot_id/container/data/import",
      {
        config: { access: "bot" },
        schema: {
          summary: "Replace /data with a tar.gz (raw application/gzip body or a multipart file), streamed, all or nothing",
          params: BotParams,
          consumes: ["application/gzip", "multipart/form-data"],
          response: { 200: ImportResult, "4xx": ErrorResponse, "5xx": ErrorResponse },
        },
      },
      async (req) => importView(await manager.importData(req.params.bot_id, await archiveBody(req))),
    );

    scope.post(
      "/bots/:bot_id/container/fs/extract",
      {
        config: { access: "bot" },
        schema: {
          summary: "Unpack a tar.gz (raw body or multipart) into a folder of the running workspace (files and directories; symlinks are reported, not made)",
          params: BotParams,
          querystring: Type.Object({ path: WorkspacePath }, { additionalProperties: false }),
          consumes: ["application/gzip", "multipart/form-data"],
          response: { 200: Type.Object({ entries: Type.Integer(), files: Type.Integer(), bytes: Type.Number(), skipped: Type.Array(Type.String()) }), "4xx": ErrorResponse, "5xx": ErrorResponse },
        },
      },
      async (req) => {
        const r = await manager.extractInto(req.params.bot_id, req.query.path, await archiveBody(req));
        return { entries: r.entries, files: r.files, bytes: r.bytes, skipped: r.skipped };
      },
    );
  });

  app.post(
    "/bots/:bot_id/container/data/restore",
    {
      config: { access: "bot" },
      schema: {
        summary: "Import the bot's preserved backup into its workspace, then remove the backup; `Accept: text/event-stream` streams progress",
        params: BotParams,
        response: { 200: ImportResult, "4xx": ErrorResponse, "5xx": ErrorResponse },
      },
    },
    async (req, reply) => {
      const botId = req.params.bot_id;
      if (!acceptsEventStream(req.headers.accept)) return importView(await manager.restoreData(botId));
      return streamDataOp(reply, ctx.streamIdleMs, "restoring", (onProgress) => manager.restoreData(botId, { onProgress }), importView);
    },
  );

  app.get(
    "/bots/:bot_id/container/fs/archive",
    // No HEAD: its answer would have to build the whole archive to be thrown away.
    { exposeHeadRoute: false, config: { access: "bot" }, schema: { summary: "A folder of the workspace as a tar.gz, streamed", params: BotParams, querystring: Type.Object({ path: WorkspacePath }, { additionalProperties: false }) } },
    async (req, reply) => {
      const botId = req.params.bot_id;
      const dir = req.query.path;
      const name = dir.split("/").filter(Boolean).pop() ?? "data";
      const out = lazyResponse(reply, { "content-type": "application/gzip", "content-disposition": `attachment; filename*=UTF-8''${encodeURIComponent(name)}.tar.gz` }, ctx.streamIdleMs);
      const gone = new AbortController();
      reply.raw.on("close", () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      let ran = false;
      try {
        await manager.call(botId, async (c) => {
          // Bytes that went out cannot be sent again: a second run (after the agent was revived) fails.
          if (ran && out.started()) throw new ApiError("unavailable", `the archive of ${dir} broke off`);
          ran = true;
          const info = (await c.stat(dir)).info;
          if (info === undefined) throw new ApiError("internal", "the agent answered without file info");
          const writer = new ArchiveWriter(out);
          try {
            // A symlink named as the folder is followed, as ReadTree follows the root of every
            // request path; a link to anything but a directory is refused by ListDir, as the
            // file itself is. (The per-file fallback below ends the whole archive at the first
            // file that cannot be read; ReadTree marks such a file and goes on.)
            if (info.type === FileType.SYMLINK) await c.listDir({ path: info.path || dir, limit: 1 });
            if ((info.type === FileType.DIRECTORY || info.type === FileType.SYMLINK) && (await c.info()).capabilities.includes("read-tree")) {
              await packReadTree(c, writer, { dir: info.path || dir, signal: gone.signal });
            } else {
              await writer.directory(".", info.mode, Number(info.mtimeMs));
              await packBridgeTree(c, writer, { dir: info.path || dir, signal: gone.signal });
            }
          } catch (err) {
            writer.abort(err);
            throw err;
          }
          await writer.finish();
        });
      } catch (err) {
        if (!out.started()) throw err;
        req.log.info({ err: String(err) }, "archive ended early");
        reply.raw.destroy();
      }
      return reply;
    },
  );

  // ------------------------------------------------------------------ versions

  app.post(
    "/bots/:bot_id/container/snapshots",
    {
      config: { access: "bot" },
      schema: {
        summary: "Create a version: stop, commit the rootfs (kept from GC), continue on a new snapshot on top, start",
        params: BotParams,
        body: Type.Optional(
          Type.Object(
            {
              display_name: Type.Optional(Type.String({ maxLength: 200 })),
              source: Type.Optional(Type.Union([Type.Literal("manual"), Type.Literal("pre_exec")])),
            },
            { additionalProperties: false },
          ),
        ),
        response: { 200: VersionView, "4xx": ErrorResponse, "5xx": ErrorResponse },
      },
    },
    async (req) => {
      const b = req.body ?? {};
      return versionView(await manager.createVersion(req.params.bot_id, { ...(b.display_name !== undefined ? { displayName: b.display_name } : {}), ...(b.source ? { source: b.source } : {}) }));
    },
  );

  app.get(
    "/bots/:bot_id/container/snapshots",
    {
      config: { access: "bot" },
      schema: {
        summary: "The workspace's versions and the lineage of its current rootfs (nearest version first)",
        params: BotParams,
        response: { 200: Type.Object({ versions: Type.Array(VersionView), lineage: Type.Array(Type.Integer()) }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const l = await manager.listVersions(req.params.bot_id);
      return { versions: l.versions.map(versionView), lineage: l.lineage };
    },
  );

  app.post(
    "/bots/:bot_id/container/snapshots/rollback",
    {
      config: { access: "bot" },
      schema: {
        summary: "Roll back to a version; the current state is saved first as a version of source `rollback`",
        params: BotParams,
        body: Type.Object({ version: Type.Integer({ minimum: 1 }) }, { additionalProperties: false }),
        response: { 200: Type.Object({ saved: VersionView, rolled_back_to: VersionView }), "4xx": ErrorResponse, "5xx": ErrorResponse },
      },
    },
    async (req) => {
      const r = await manager.rollback(req.params.bot_id, req.body.version);
      return { saved: versionView(r.saved), rolled_back_to: versionView(r.to) };
    },
  );

  app.delete(
    "/bots/:bot_id/container/snapshots/:version",
    {
      config: { access: "bot" },
      schema: {
        summary: "Delete a version (its snapshot goes once nothing depends on it)",
        params: Type.Intersect([BotParams, Type.Object({ version: Type.Integer({ minimum: 1 }) })]),
        response: { 200: Type.Object({ deleted: Type.Boolean(), snapshot_removed: Type.Boolean() }), "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const r = await manager.deleteVersion(req.params.bot_id, req.params.version);
      return { deleted: true, snapshot_removed: r.snapshotRemoved };
    },
  );
}
