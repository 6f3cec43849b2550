// Exec: one process per call, on pipes or on a pty.
//
// Request stream: start first; then stdin, close_stdin, signal, resize.
//  - Half-closing the request stream means "no more input" and closes stdin
//    (on a pty: types ^D once, unless close_stdin already did).
//  - A malformed later message (second start, unknown signal, oversized resize,
//    stdin after close_stdin on pipes) ends the call with INVALID_ARGUMENT after
//    the process group has been killed: the reply stream has no channel for a
//    per-message error, and a bad request must not go unnoticed.
//  - A message of a kind this agent does not know (empty oneof) is ignored, so a
//    newer host can talk to an older agent.
//  - Stdin is held for the process up to EXEC_STDIN_BUFFER_BYTES (pipes: in the
//    pipe's Writable; pty: PtyStdin). Messages keep being read meanwhile, so a
//    signal, resize or close_stdin behind that much unread stdin acts at once;
//    beyond it the call stops reading its request stream (and reads nothing
//    ahead) until the process takes its input.
// Reply stream: started{pid}, stdout/stderr chunks as they arrive (held back
// by gRPC flow control, never buffered whole), then exactly one exit after the
// last output byte, then OK.
// Timeout and client cancel SIGKILL the whole session: the process group and
// every process that moved to another group of the session (children.ts).
// Agent shutdown does the same at the end of its grace period; the call then
// ends normally, with a stderr line saying why and the exit (SIGKILL): not with
// UNAVAILABLE, which a client may take as "retry", and a command must not run twice.
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument, RpcError, Status } from "../errors.js";
import { killSession, trackChild } from "./children.js";
import { parseExecStart, ptyDimension, type ExecSpec } from "./command.js";
import { setChildOomScore } from "./oom.js";
import { spawnProcess } from "./process.js";
import { spawnPty } from "./pty.js";
import type { ExecSink } from "./running.js";
import { parseSignal, type ExitStatus } from "./signals.js";
import { Outbox, readFirstMessage } from "./stream.js";

/** setTimeout's limit (about 24.8 days); a longer uint32 timeout would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

type ExecReply = MessageInitShape<typeof pb.ExecResponseSchema>;
type ExecCall = grpc.ServerDuplexStream<pb.ExecRequest, ExecReply>;

export async function exec(ctx: AgentContext, call: ExecCall): Promise<void> {
  const first = await readFirstMessage(call, "Exec");
  if (first.msg.case !== "start") {
    throw invalidArgument(`the first Exec message must be start, not ${first.msg.case ?? "an empty message"}`);
  }
  return runExec(ctx, call, await parseExecStart(ctx, first.msg.value));
}

async function runExec(ctx: AgentContext, call: ExecCall, spec: ExecSpec): Promise<void> {
  const outbox = new Outbox<ExecReply>(call);
  let reportExit!: (status: ExitStatus) => void;
  const exited = new Promise<ExitStatus>((resolve) => (reportExit = resolve));
  // Output that arrives before "started" went out (a pty's child can write while
  // spawnPty still waits for its setsid) is held and sent right after it.
  let early: ExecReply[] | undefined = [];
  const send = (reply: ExecReply) => (early ? early.push(reply) : outbox.send(reply));
  const sink: ExecSink = {
    stdout: (data) => send({ msg: { case: "stdout", value: data } }),
    stderr: (data) => send({ msg: { case: "stderr", value: data } }),
    exited: reportExit,
  };

  const startedAt = performance.now();
  const proc = spec.pty ? await spawnPty(spec, sink) : await spawnProcess(spec, sink);
  setChildOomScore(ctx, proc.pid);
  ctx.children.add(proc);
  let markFinished!: () => void;
  const finished = new Promise<void>((resolve) => (markFinished = resolve));
  outbox.addSource(proc);
  outbox.send({ msg: { case: "started", value: { pid: proc.pid } } });
  for (const reply of early) outbox.send(reply);
  early = undefined;

  let timedOut = false;
  let cancelled = false;
  let stdinClosed = false;
  let killedByShutdown = false;
  let failure: RpcError | undefined;

  const fail = (err: unknown) => {
    if (failure) return;
    failure = err instanceof RpcError ? err : new RpcError(Status.INTERNAL, `internal error: ${String(err)}`);
    killSession(proc.pid);
    proc.abandon();
  };

  let stdinFull = false;
  const writeStdin = (data: Uint8Array) => {
    if (stdinClosed && !proc.stdinReopens) throw invalidArgument("stdin sent after close_stdin");
    if (data.byteLength === 0) return;
    if (!proc.writeStdin(data) && !stdinFull) {
      // EXEC_STDIN_BUFFER_BYTES wait for the process: take no more messages off
      // the connection until it reads (noReadAhead: nothing is read ahead either).
      stdinFull = true;
      call.pause();
      proc.onStdinDrain(() => {
        stdinFull = false;
        if (!failure && !cancelled) call.resume();
      });
    }
  };

  const closeStdin = () => {
    stdinClosed = true;
    proc.closeStdin();
  };

  const onMessage = (req: pb.ExecRequest) => {
    if (failure || cancelled) return;
    try {
      switch (req.msg.case) {
        case "stdin":
          writeStdin(req.msg.value);
          break;
        case "closeStdin":
          if (req.msg.value) closeStdin();
          break;
        case "signal":
          proc.kill(parseSignal(req.msg.value));
          break;
        case "resize":
          if (spec.pty) {
            proc.resize(
              ptyDimension(req.msg.value.cols, 0, "resize.cols"),
              ptyDimension(req.msg.value.rows, 0, "resize.rows"),
            );
          }
          break;
        case "start":
          throw invalidArgument("start sent twice");
        default:
          break;
      }
    } catch (err) {
      fail(err);
    }
  };
  const onEnd = () => {
    if (!stdinClosed && !failure && !cancelled) closeStdin();
  };
  const onCancelled = () => {
    if (cancelled) return;
    cancelled = true;
    outbox.close();
    killSession(proc.pid);
    proc.abandon();
  };

  call.on("data", onMessage);
  call.on("end", onEnd);
  call.on("cancelled", onCancelled);
  const timer =
    spec.timeoutMs > 0
      ? setTimeout(() => {
          timedOut = true;
          killSession(proc.pid);
        }, Math.min(spec.timeoutMs, MAX_TIMER_MS))
      : undefined;
  if (call.cancelled) onCancelled();
  trackChild(ctx, {
    pid: proc.pid,
    finished,
    shutdown: () => {
      if (failure || cancelled || killedByShutdown) return;
      killedByShutdown = true;
      killSession(proc.pid);
    },
  });
  try {
    if (spec.stdin.byteLength > 0) writeStdin(spec.stdin);
    if (spec.closeStdin) closeStdin();
  } catch (err) {
    fail(err);
  }
  // Unless the start message's stdin already filled the buffer (then the drain resumes the call).
  if (!stdinFull) call.resume();

  let status: ExitStatus;
  try {
    status = await exited;
  } finally {
    clearTimeout(timer);
    call.off("data", onMessage);
    call.off("end", onEnd);
    call.off("cancelled", onCancelled);
    ctx.children.delete(proc);
    markFinished();
  }
  if (cancelled) return;
  if (failure) throw failure;
  if (killedByShutdown) {
    outbox.send({ msg: { case: "stderr", value: Buffer.from(`memoh-agent: the agent is shutting down; ${spec.file} (pid ${proc.pid}) was killed\n`) } });
  }
  outbox.send({
    msg: {
      case: "exit",
      value: { code: status.code, signal: status.signal, timedOut, durationMs: performance.now() - startedAt },
    },
  });
}
