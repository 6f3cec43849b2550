// Exec (collected, or streamed as NDJSON lines) and the terminal (a WebSocket bridged
// to an Exec on a pseudo-terminal). A client that goes away cancels the Exec, and the
// agent kills its whole process group.
import { StringDecoder } from "node:string_decoder";
import { Type, type Static } from "@sinclair/typebox";
import type { WebSocket } from "ws";
import type { ExecResponse } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { writeWithBackpressure } from "../drain.js";
import { ApiError, toApiError } from "../errors.js";
import type { ApiApp, RouteContext } from "../server.js";
import { BotParams, ErrorResponse, WorkspacePath } from "../schemas.js";

const MAX_COLLECTED_OUTPUT = 16 * 1024 * 1024;
/** Terminal output queued toward a WebSocket client before the shell's output is paused. */
const TERMINAL_BUFFER_BYTES = 1024 * 1024;

const ExecBody = Type.Object(
  {
    argv: Type.Optional(Type.Array(Type.String({ maxLength: 128 * 1024, pattern: "^[^\\u0000]*$" }), { minItems: 1, maxItems: 4096 })),
    command: Type.Optional(Type.String({ minLength: 1, maxLength: 256 * 1024, pattern: "^[^\\u0000]*$", description: "run as /bin/sh -c <command>" })),
    cwd: Type.Optional(WorkspacePath),
    env: Type.Optional(Type.Record(Type.String({ pattern: "^[^=\\u0000]+$", maxLength: 1024 }), Type.String({ maxLength: 128 * 1024, pattern: "^[^\\u0000]*$" }))),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    timeout_s: Type.Optional(Type.Number({ minimum: 0, maximum: 86_400, description: "kill the process group after this long (default 600; 0 = none)" })),
    stdin: Type.Optional(Type.String({ maxLength: 512 * 1024, description: "bytes (UTF-8) written to stdin, which is then closed" })),
    version_before: Type.Optional(Type.Boolean({ description: "save a version (source pre_exec) before the command runs; the workspace restarts for it" })),
  },
  { additionalProperties: false },
);

function execStart(b: Static<typeof ExecBody>) {
  if ((b.argv === undefined) === (b.command === undefined)) throw new ApiError("invalid_argument", "give exactly one of argv and command");
  const timeoutS = b.timeout_s ?? 600;
  return {
    ...(b.argv !== undefined ? { argv: b.argv } : { command: b.command! }),
    ...(b.cwd !== undefined ? { cwd: b.cwd } : {}),
    ...(b.env !== undefined ? { env: b.env } : {}),
    ...(b.user !== undefined ? { user: b.user } : {}),
    timeoutMs: Math.round(timeoutS * 1000),
    stdin: Buffer.from(b.stdin ?? "", "utf8"),
    closeStdin: true,
  };
}

export function registerExecRoutes(app: ApiApp, ctx: RouteContext): void {
  const { manager } = ctx;

  app.post(
    "/bots/:bot_id/container/exec",
    {
      config: { access: "bot" },
      schema: {
        summary: "Run a command; `Accept: application/x-ndjson` streams {stdout}/{stderr}/{exit} lines",
        params: BotParams,
        body: ExecBody,
        response: {
          200: Type.Object({ stdout: Type.String(), stderr: Type.String(), exit_code: Type.Integer(), signal: Type.Union([Type.String(), Type.Null()]), timed_out: Type.Boolean(), truncated: Type.Boolean(), duration_ms: Type.Number() }),
          "4xx": ErrorResponse,
          "5xx": ErrorResponse,
        },
      },
    },
    async (req, reply) => {
      const start = execStart(req.body);
      // Listening from the start: a client gone while a version is saved runs nothing.
      const gone = new AbortController();
      reply.raw.on("close", () => {
        if (!reply.raw.writableFinished) gone.abort();
      });
      if (req.body.version_before) {
        const what = (req.body.command ?? req.body.argv?.join(" ") ?? "").slice(0, 150);
        await manager.createVersion(req.params.bot_id, { source: "pre_exec", displayName: `before exec: ${what}` });
        if (gone.signal.aborted) throw new ApiError("unavailable", "the client went away before the command started");
      }
      const streaming = (req.headers.accept ?? "").split(",").some((a) => a.trim().split(";")[0] === "application/x-ndjson");
      if (!streaming) {
        const r = await manager.call(req.params.bot_id, (c) => c.exec(start, { signal: gone.signal, maxOutputBytes: MAX_COLLECTED_OUTPUT }));
        return { stdout: r.stdout.toString("utf8"), stderr: r.stderr.toString("utf8"), exit_code: r.code, signal: r.signal || null, timed_out: r.timedOut, truncated: r.truncated, duration_ms: r.durationMs };
      }
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { "content-type": "application/x-ndjson; charset=utf-8", "cache-control": "no-cache" });
      // Output waits for the client (the agent pauses the command meanwhile); a client
      // that reads nothing for the idle time is cut off and the command killed.
      const line = (value: unknown) => writeWithBackpressure(res, `${JSON.stringify(value)}\n`, ctx.streamIdleMs);
      // A character split between two chunks is kept until its rest arrives.
      const stdout = new StringDecoder("utf8");
      const stderr = new StringDecoder("utf8");
      const text = (decoder: StringDecoder, d: Uint8Array) => decoder.write(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
      const flush = () => {
        const out = stdout.end();
        const err = stderr.end();
        if (out !== "") void line({ stdout: out })?.catch(() => {});
        if (err !== "") void line({ stderr: err })?.catch(() => {});
      };
      try {
        const r = await manager.call(req.params.bot_id, (c) =>
          c.exec(start, {
            signal: gone.signal,
            maxOutputBytes: 0,
            onStdout: (d) => {
              const t = text(stdout, d);
              return t === "" ? undefined : line({ stdout: t });
            },
            onStderr: (d) => {
              const t = text(stderr, d);
              return t === "" ? undefined : line({ stderr: t });
            },
          }),
        );
        flush();
        void line({ exit: { code: r.code, signal: r.signal || null, timed_out: r.timedOut, duration_ms: r.durationMs } })?.catch(() => {});
      } catch (err) {
        const e = toApiError(err);
        if (!res.destroyed) void line({ error: { code: e.code, message: e.message } })?.catch(() => {});
      }
      res.end();
      return reply;
    },
  );

  app.get(
    "/bots/:bot_id/container/terminal",
    {
      websocket: true,
      config: { access: "bot" },
      schema: {
        summary: "A terminal: WebSocket to a shell on a pseudo-terminal (binary frames both ways; text {\"resize\":{cols,rows}}; closes with 4000 + the exit code)",
        params: BotParams,
        querystring: Type.Object(
          {
            cols: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 80 })),
            rows: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 24 })),
            command: Type.Optional(Type.String({ minLength: 1, maxLength: 64 * 1024, pattern: "^[^\\u0000]*$" })),
          },
          { additionalProperties: false },
        ),
      },
    },
    (socket: WebSocket, req) => {
      const q = req.query as { cols?: number; rows?: number; command?: string };
      const botId = (req.params as { bot_id: string }).bot_id;
      void runTerminal(ctx, botId, socket, { cols: q.cols ?? 80, rows: q.rows ?? 24, command: q.command ?? "exec /bin/sh -i" }).catch((err: unknown) => {
        const e = toApiError(err);
        if (socket.readyState === socket.OPEN) socket.close(1011, `${e.code}: ${e.message}`.slice(0, 120));
      });
    },
  );
  void ErrorResponse;
}

/** One terminal session: the WebSocket and an Exec stream with a PTY, until either ends. */
async function runTerminal(ctx: RouteContext, botId: string, socket: WebSocket, opts: { cols: number; rows: number; command: string }): Promise<void> {
  // Frames that arrive while the Exec starts are kept (bounded) and sent once it runs.
  const early: Array<Buffer | string> = [];
  let earlyBytes = 0;
  const keepEarly = (data: Buffer | string) => {
    earlyBytes += data.length;
    if (earlyBytes > 1024 * 1024) socket.close(1009, "too much input before the terminal started");
    else early.push(data);
  };
  const onEarly = (data: Buffer, isBinary: boolean) => keepEarly(isBinary ? data : data.toString("utf8"));
  socket.on("message", onEarly);
  // A socket closed while the agent is reached (a cold channel, a revive) starts no shell.
  let closedEarly = socket.readyState !== socket.OPEN;
  const onEarlyClose = () => void (closedEarly = true);
  socket.once("close", onEarlyClose);

  await ctx.manager.call(botId, (c) =>
    new Promise<void>((resolve, reject) => {
      socket.off("close", onEarlyClose);
      if (closedEarly || socket.readyState !== socket.OPEN) return resolve();
      const call = c.execStream({ timeoutMs: 7 * 24 * 3600_000 });
      let idle: NodeJS.Timeout | undefined;
      const touch = () => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => socket.close(1001, "idle for too long"), ctx.streamIdleMs * 12);
        idle.unref();
      };
      touch();
      // Output waits for the client: past TERMINAL_BUFFER_BYTES not yet handed to the
      // kernel the Exec is paused (the agent pauses the pty), and a client that takes
      // nothing for the idle time is cut off, which ends the shell.
      let unsent = 0;
      let stalled: NodeJS.Timeout | undefined;
      const sent = (n: number) => {
        unsent -= n;
        if (stalled !== undefined && unsent <= TERMINAL_BUFFER_BYTES / 4) {
          clearTimeout(stalled);
          stalled = undefined;
          call.resume();
        }
      };
      const send = (data: Uint8Array) => {
        unsent += data.length;
        socket.send(data, { binary: true }, () => sent(data.length));
        if (stalled === undefined && unsent > TERMINAL_BUFFER_BYTES) {
          call.pause();
          stalled = setTimeout(() => socket.terminate(), ctx.streamIdleMs);
          stalled.unref();
        }
      };
      const handle = (data: Buffer | string) => {
        touch();
        if (typeof data !== "string") {
          call.write({ msg: { case: "stdin", value: data } });
          return;
        }
        let parsed: unknown;
        try {
          parsed = JSON.parse(data);
        } catch {
          socket.close(1007, "text frames must be JSON: {\"resize\":{\"cols\":N,\"rows\":N}}");
          return;
        }
        const resize = (parsed as { resize?: { cols?: unknown; rows?: unknown } }).resize;
        if (resize && Number.isInteger(resize.cols) && Number.isInteger(resize.rows) && (resize.cols as number) > 0 && (resize.rows as number) > 0 && (resize.cols as number) <= 1000 && (resize.rows as number) <= 1000) {
          call.write({ msg: { case: "resize", value: { cols: resize.cols as number, rows: resize.rows as number } } });
        } else socket.close(1007, "unknown text frame: send {\"resize\":{\"cols\":N,\"rows\":N}}");
      };
      call.write({ msg: { case: "start", value: { command: opts.command, pty: true, ptySize: { cols: opts.cols, rows: opts.rows } } } });
      socket.off("message", onEarly);
      for (const d of early.splice(0)) handle(d);
      socket.on("message", (data: Buffer, isBinary: boolean) => handle(isBinary ? data : data.toString("utf8")));
      socket.on("close", () => {
        if (stalled !== undefined) clearTimeout(stalled);
        call.cancel();
        resolve();
      });
      call.on("data", (m: ExecResponse) => {
        touch();
        if (m.msg.case === "stdout" || m.msg.case === "stderr") {
          if (socket.readyState === socket.OPEN) send(m.msg.value);
        } else if (m.msg.case === "exit") {
          const code = Math.max(0, Math.min(255, m.msg.value.code));
          if (socket.readyState === socket.OPEN) socket.close(4000 + code, JSON.stringify({ exit_code: m.msg.value.code }));
        }
      });
      call.on("error", (err: Error) => {
        if (idle) clearTimeout(idle);
        if (socket.readyState !== socket.OPEN) return resolve();
        reject(err);
      });
      call.on("end", () => {
        if (idle) clearTimeout(idle);
        resolve();
      });
    }),
  );
}
