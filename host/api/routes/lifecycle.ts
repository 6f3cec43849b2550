// Lifecycle routes (Memoh's, kept recognisable): create (JSON or an SSE stream of its
// phases), status, delete, start, stop, live limits, the list of workspaces, events.
import { Type, type Static } from "@sinclair/typebox";
import type { ArchiveProgress, BackupResult, CreateProgress, WorkspaceStatus } from "../../workspace/manager.js";
import { acceptsEventStream, streamDataOp } from "./data.js";
import { ApiError, toApiError } from "../errors.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams, ErrorResponse, Paging } from "../schemas.js";
import { SseStream } from "../sse.js";

const MIB = 1024 * 1024;

const Limits = Type.Object(
  {
    memory_mb: Type.Optional(Type.Integer({ minimum: 64, maximum: 4 * 1024 * 1024, description: "memory limit in MiB" })),
    cpus: Type.Optional(Type.Number({ minimum: 0.05, maximum: 1024, description: "CPU quota in CPUs" })),
    pids: Type.Optional(Type.Integer({ minimum: 16, maximum: 4_194_304, description: "maximum processes and threads" })),
  },
  { additionalProperties: false },
);

const CreateBody = Type.Object(
  {
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 512 })),
    snapshotter: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    gpu: Type.Optional(Type.Object({ devices: Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 64 }) }, { additionalProperties: false })),
    limits: Type.Optional(Limits),
    restore_data: Type.Optional(Type.Boolean({ description: "a new workspace gets the bot's preserved backup as /data before it starts" })),
  },
  { additionalProperties: false },
);

export const WorkspaceView = Type.Object({
  bot_id: Type.String(),
  container_id: Type.String(),
  status: Type.String({ description: "the row's status (creating, running, stopped, error, deleting), or absent" }),
  task: Type.String({ description: "containerd's task status, or none" }),
  pid: Type.Union([Type.Integer(), Type.Null()]),
  image: Type.Union([Type.String(), Type.Null()]),
  snapshotter: Type.String(),
  ip: Type.Union([Type.String(), Type.Null()]),
  legacy: Type.Boolean(),
  auto_start: Type.Union([Type.Boolean(), Type.Null()]),
  devices: Type.Array(Type.String()),
  limits: Type.Union([Type.Object({ memory_mb: Type.Number(), cpus: Type.Number(), pids: Type.Integer() }), Type.Null()]),
  oom_kills: Type.Integer(),
  last_oom_at: Type.Union([Type.String(), Type.Null()]),
  usage: Type.Union([
    Type.Object({
      memory_bytes: Type.Union([Type.Number(), Type.Null()]),
      memory_limit_bytes: Type.Union([Type.Number(), Type.Null()]),
      oom_kills_since_start: Type.Union([Type.Integer(), Type.Null()]),
      pids: Type.Union([Type.Integer(), Type.Null()]),
      pids_limit: Type.Union([Type.Integer(), Type.Null()]),
    }),
    Type.Null(),
  ]),
  has_preserved_data: Type.Boolean(),
  created_at: Type.Union([Type.String(), Type.Null()]),
  last_started_at: Type.Union([Type.String(), Type.Null()]),
  last_stopped_at: Type.Union([Type.String(), Type.Null()]),
});
export type WorkspaceView = Static<typeof WorkspaceView>;

const iso = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

export function workspaceView(s: WorkspaceStatus, snapshotter: string): WorkspaceView {
  const row = s.row;
  return {
    bot_id: s.botId,
    container_id: s.containerId,
    status: row?.status ?? "absent",
    task: s.task,
    pid: s.pid ?? null,
    image: row?.image ?? null,
    snapshotter,
    ip: s.ip ?? null,
    legacy: s.legacy,
    auto_start: row?.autoStart ?? null,
    devices: row?.cdiDevices ?? [],
    limits: s.limits ? { memory_mb: s.limits.memoryBytes / MIB, cpus: s.limits.cpus, pids: s.limits.pids } : null,
    oom_kills: s.oomKills,
    last_oom_at: iso(s.lastOomAt),
    usage: s.cgroup
      ? {
          memory_bytes: s.cgroup.memory?.usageBytes ?? null,
          memory_limit_bytes: s.cgroup.memory?.limitBytes ?? null,
          oom_kills_since_start: s.cgroup.memory?.oomKills ?? null,
          pids: s.cgroup.pids?.current ?? null,
          pids_limit: s.cgroup.pids?.limit ?? null,
        }
      : null,
    has_preserved_data: s.hasPreservedData,
    created_at: iso(row?.createdAt),
    last_started_at: iso(row?.lastStartedAt),
    last_stopped_at: iso(row?.lastStoppedAt),
  };
}

function limitsChange(l: Static<typeof Limits> | undefined): { memoryBytes?: number; cpus?: number; pids?: number } | undefined {
  if (l === undefined) return undefined;
  return {
    ...(l.memory_mb !== undefined ? { memoryBytes: l.memory_mb * MIB } : {}),
    ...(l.cpus !== undefined ? { cpus: l.cpus } : {}),
    ...(l.pids !== undefined ? { pids: l.pids } : {}),
  };
}

/** Progress for the SSE stream: per-layer offsets, sent at most every 250 ms. */
class PullProgress {
  private readonly layers = new Map<string, { offset: number; total: number }>();
  private last = 0;
  private dirty = false;
  private pending: NodeJS.Timeout | undefined;
  constructor(private readonly send: (data: unknown) => void) {}
  update(digest: string, offset: number, total: number): void {
    this.layers.set(digest, { offset, total });
    this.dirty = true;
    const wait = this.last + 250 - Date.now();
    if (wait <= 0) this.flush();
    else this.pending ??= setTimeout(() => this.flush(), wait);
  }
  flush(): void {
    if (this.pending) clearTimeout(this.pending);
    this.pending = undefined;
    if (!this.dirty) return;
    this.dirty = false;
    this.last = Date.now();
    const layers = [...this.layers].map(([ref, l]) => ({ ref, offset: l.offset, total: l.total }));
    this.send({ layers, offset: layers.reduce((n, l) => n + l.offset, 0), total: layers.reduce((n, l) => n + l.total, 0) });
  }
}

export function registerLifecycleRoutes(app: ApiApp, ctx: RouteContext): void {
  const { manager } = ctx;
  const view = (s: WorkspaceStatus) => workspaceView(s, ctx.snapshotter);

  app.post(
    "/bots/:bot_id/container",
    {
      config: { access: "bot" },
      schema: {
        summary: "Create (if needed) and start the bot's workspace; `Accept: text/event-stream` streams the phases",
        params: BotParams,
        body: Type.Optional(CreateBody),
        response: { 200: Type.Object({ container_id: Type.String(), image: Type.Union([Type.String(), Type.Null()]), snapshotter: Type.String(), status: Type.String(), started: Type.Boolean() }), "4xx": ErrorResponse, "5xx": ErrorResponse },
      },
    },
    async (req, reply) => {
      const botId = req.params.bot_id;
      const body = req.body ?? {};
      // Limits and devices are the host's to give: a bot's token creates its workspace
      // with the configured defaults and no devices.
      if (req.principal?.kind !== "admin" && (body.limits !== undefined || body.gpu !== undefined)) {
        throw new ApiError("permission_denied", "only the admin token sets limits or devices (gpu); a bot token creates its workspace with the configured defaults");
      }
      if (body.snapshotter !== undefined && body.snapshotter !== ctx.snapshotter) {
        throw new ApiError("invalid_argument", `snapshotter ${JSON.stringify(body.snapshotter)} is not available: workspaces use ${JSON.stringify(ctx.snapshotter)}`);
      }
      const before = await manager.status(botId);
      const wasRunning = before.task === "running" && before.row?.status === "running";
      const limits = limitsChange(body.limits);
      const options = {
        ...(body.image !== undefined ? { image: body.image } : {}),
        ...(body.gpu !== undefined ? { cdiDevices: body.gpu.devices } : {}),
        ...(limits !== undefined ? { limits } : {}),
        ...(body.restore_data ? { restoreData: true } : {}),
      };
      const answer = (s: WorkspaceStatus) => ({ container_id: s.containerId, image: s.row?.image ?? null, snapshotter: ctx.snapshotter, status: s.row?.status ?? "absent", started: !wasRunning && s.task === "running" });
      if (!acceptsEventStream(req.headers.accept)) return answer(await manager.ensure(botId, options));

      // The stream: the create runs to its end and is recorded even when the client goes away.
      const sse = new SseStream(reply, ctx.streamIdleMs);
      const progress = new PullProgress((data) => sse.send("pull_progress", data));
      const onDataProgress = (p: ArchiveProgress) => sse.send("progress", { phase: "restoring", bytes: p.bytes, files: p.files });
      const onProgress = (p: CreateProgress) => {
        if (p.phase === "pull_progress") progress.update(p.digest, p.offset, p.total);
        else {
          if (p.phase === "creating" || p.phase === "starting" || p.phase === "restoring") progress.flush();
          sse.send(p.phase, p.phase === "pulling" ? { image: p.image } : {});
        }
      };
      try {
        const status = await manager.ensure(botId, { ...options, onProgress, onDataProgress });
        progress.flush();
        sse.send("complete", { container: { ...view(status), started: answer(status).started } });
      } catch (err) {
        progress.flush();
        const e = toApiError(err);
        sse.send("error", { code: e.code, message: e.message });
      }
      sse.end();
      return reply;
    },
  );

  app.get(
    "/bots/:bot_id/container",
    { config: { access: "bot" }, schema: { summary: "The workspace: row, live task, IP, image, limits, devices, OOM kills", params: BotParams, response: { 200: WorkspaceView, "4xx": ErrorResponse } } },
    async (req) => {
      const s = await manager.status(req.params.bot_id);
      if (s.row === undefined && !s.containerExists) throw new ApiError("not_found", `bot ${req.params.bot_id} has no workspace`);
      return view(s);
    },
  );

  app.delete(
    "/bots/:bot_id/container",
    {
      config: { access: "bot" },
      schema: {
        summary: "Delete the workspace (task, network, container, rootfs, versions, row); with preserve_data=true /data is backed up (confirmed) first; `Accept: text/event-stream` streams the phases",
        params: BotParams,
        querystring: Type.Object({ preserve_data: Type.Optional(Type.Boolean({ default: false })) }, { additionalProperties: false }),
        response: {
          200: Type.Object({ deleted: Type.Boolean(), backup: Type.Optional(Type.Object({ path: Type.String(), sha256: Type.String(), size: Type.Number(), files: Type.Integer(), bytes: Type.Number(), skipped: Type.Array(Type.String()) })) }),
          "4xx": ErrorResponse,
          "5xx": ErrorResponse,
        },
      },
    },
    async (req, reply) => {
      const botId = req.params.bot_id;
      const preserve = req.query.preserve_data === true;
      const s = await manager.status(botId);
      if (s.row === undefined && !s.containerExists && !s.hasPreservedData) throw new ApiError("not_found", `bot ${botId} has no workspace`);
      const answer = (b: BackupResult | undefined) => ({ deleted: true, ...(b ? { backup: { path: b.path, sha256: b.sha256, size: b.size, files: b.files, bytes: b.bytes, skipped: b.skipped } } : {}) });
      if (!preserve || !acceptsEventStream(req.headers.accept)) return answer(await manager.delete(botId, { preserveData: preserve }));
      return streamDataOp(reply, ctx.streamIdleMs, "preserving", (onProgress) => manager.delete(botId, { preserveData: true, onProgress }), answer);
    },
  );

  app.post(
    "/bots/:bot_id/container/start",
    { config: { access: "bot" }, schema: { summary: "Start the existing workspace", params: BotParams, response: { 200: WorkspaceView, "4xx": ErrorResponse } } },
    async (req) => view(await manager.start(req.params.bot_id)),
  );

  app.post(
    "/bots/:bot_id/container/stop",
    {
      config: { access: "bot" },
      schema: {
        summary: "Stop the workspace (SIGTERM, then SIGKILL after timeout_s)",
        params: BotParams,
        body: Type.Optional(Type.Object({ timeout_s: Type.Optional(Type.Number({ minimum: 0, maximum: 3600 })) }, { additionalProperties: false })),
        response: { 200: WorkspaceView, "4xx": ErrorResponse },
      },
    },
    async (req) => {
      const timeout = req.body?.timeout_s;
      return view(await manager.stop(req.params.bot_id, timeout !== undefined ? { graceMs: timeout * 1000 } : {}));
    },
  );

  app.patch(
    "/bots/:bot_id/container",
    {
      // Limits protect the host from a workspace: the bot's own token cannot lift them.
      config: { access: "admin" },
      schema: {
        summary: "Change the running workspace's limits (no restart; admin)",
        params: BotParams,
        body: Type.Object({ limits: Limits }, { additionalProperties: false }),
        response: { 200: WorkspaceView, "4xx": ErrorResponse },
      },
    },
    async (req) => view(await manager.updateLimits(req.params.bot_id, limitsChange(req.body.limits) ?? {})),
  );

  app.get(
    "/bots",
    {
      config: { access: "admin" },
      schema: {
        summary: "Every workspace (paged, optionally by status)",
        querystring: Type.Intersect([Paging, Type.Object({ status: Type.Optional(Type.Union(["creating", "running", "stopped", "error", "deleting"].map((s) => Type.Literal(s)))) })]),
        response: { 200: Type.Object({ workspaces: Type.Array(WorkspaceView), total: Type.Integer(), offset: Type.Integer(), limit: Type.Integer() }) },
      },
    },
    async (req) => {
      const all = (await manager.list()).filter((w) => req.query.status === undefined || w.row?.status === req.query.status);
      const offset = req.query.offset ?? 0;
      const limit = req.query.limit ?? 100;
      return { workspaces: all.slice(offset, offset + limit).map(view), total: all.length, offset, limit };
    },
  );

  app.get(
    "/bots/:bot_id/container/events",
    {
      config: { access: "bot" },
      schema: {
        summary: "The workspace's lifecycle events, newest first",
        params: BotParams,
        querystring: Paging,
        response: { 200: Type.Object({ events: Type.Array(Type.Object({ id: Type.Union([Type.String(), Type.Integer()]), type: Type.String(), payload: Type.Unknown(), created_at: Type.String() })), offset: Type.Integer(), limit: Type.Integer() }) },
      },
    },
    async (req) => {
      const offset = req.query.offset ?? 0;
      const limit = req.query.limit ?? 100;
      const events = await manager.events(req.params.bot_id, { offset, limit });
      return { events: events.map((e) => ({ id: e.id, type: e.eventType, payload: e.payload, created_at: e.createdAt.toISOString() })), offset, limit };
    },
  );
}
