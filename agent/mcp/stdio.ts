// McpStdio: an MCP server on stdio, newline-delimited JSON-RPC both ways.
//
// - A server that cannot start ends the call with a status, like Exec
//   (NOT_FOUND naming the command and PATH, PERMISSION_DENIED, ...): nothing
//   ran, so there is no exit to report. A server that starts and dies sends
//   exit{code, signal, stderr_tail}, so it explains itself.
// - Client messages are checked before they reach the server. Input that is not
//   JSON, or not JSON-RPC 2.0, is answered with a JSON-RPC error (-32700 /
//   -32600, error.data.source = "memoh-agent") sent back as a `message`, and the
//   session goes on: one bad line must not cost the client its server. A message
//   after close_stdin is answered the same way (-32000).
// - Server stdout: JSON-RPC lines become `message`, other lines `stdout_noise`;
//   a line too large for one gRPC message is dropped with a noise notice.
// - Server stderr is never forwarded, only its tail kept (and always read, so a
//   chatty server cannot block on it).
// - close_stdin, or half-closing the request stream, closes the server's stdin
//   (the MCP stdio way of asking it to exit). Client cancel kills its session
//   (whatever the server forked too, whichever process group it is in); agent
//   shutdown does the same at the end of its grace period, and the exit's
//   stderr tail ends with a line saying so.
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument, RpcError } from "../errors.js";
import { EXEC_STDIO_GRACE_MS, MCP_MAX_LINE_BYTES, MCP_STDERR_LINE_BYTES, MCP_STDERR_TAIL_LINES } from "../limits.js";
import { killSession, trackChild } from "../exec/children.js";
import { LingeringStdio } from "../exec/lingering-stdio.js";
import { setChildOomScore } from "../exec/oom.js";
import { exitStatus, type ExitStatus } from "../exec/signals.js";
import { Outbox, readFirstMessage } from "../exec/stream.js";
import { checkClientMessage, errorReply, isJsonRpcLine, STDIN_CLOSED } from "./jsonrpc.js";
import { LineSplitter } from "./lines.js";
import { parseMcpStart, spawnMcpServer } from "./start.js";
import { StderrTail } from "./stderr-tail.js";

type McpReply = MessageInitShape<typeof pb.McpStdioResponseSchema>;
type McpCall = grpc.ServerDuplexStream<pb.McpStdioRequest, McpReply>;

const ignore = (): void => {};

export async function mcpStdio(ctx: AgentContext, call: McpCall): Promise<void> {
  const first = await readFirstMessage(call, "McpStdio");
  if (first.msg.case !== "start") {
    throw invalidArgument(`the first McpStdio message must be start, not ${first.msg.case ?? "an empty message"}`);
  }
  const spec = await parseMcpStart(ctx, first.msg.value);
  const child = await spawnMcpServer(spec);
  const pid = child.pid!;
  setChildOomScore(ctx, pid);
  ctx.children.add(child);

  const outbox = new Outbox<McpReply>(call);
  const noise = (text: string) => outbox.send({ msg: { case: "stdoutNoise", value: text } });
  const lingering = new LingeringStdio([child.stdout, child.stderr], EXEC_STDIO_GRACE_MS);
  outbox.addSource({
    pause: () => {
      child.stdout.pause();
      lingering.pause();
    },
    resume: () => {
      child.stdout.resume();
      lingering.resume();
    },
  });

  const stdoutLines = new LineSplitter({
    maxBytes: MCP_MAX_LINE_BYTES,
    keepHead: false,
    onLine: (line, info) => {
      if (info.truncated) {
        noise(`memoh-agent: dropped a ${info.bytes}-byte stdout line (limit ${MCP_MAX_LINE_BYTES} bytes)`);
        return;
      }
      if (line.length === 0) return;
      // The limit holds for what is sent: text, where each invalid UTF-8 byte becomes U+FFFD (3 bytes).
      const text = line.toString("utf8");
      const textBytes = Buffer.byteLength(text);
      if (textBytes > MCP_MAX_LINE_BYTES) {
        noise(`memoh-agent: dropped a ${info.bytes}-byte stdout line (${textBytes} bytes as UTF-8 text; limit ${MCP_MAX_LINE_BYTES} bytes)`);
        return;
      }
      if (isJsonRpcLine(text)) outbox.send({ msg: { case: "message", value: text } });
      else noise(text);
    },
  });
  const stderrTail = new StderrTail(MCP_STDERR_TAIL_LINES, MCP_STDERR_LINE_BYTES);

  const closed = new Promise<ExitStatus>((resolve) => {
    child.on("close", (code, signal) => resolve(exitStatus(code, signal)));
  });
  child.stdout.on("data", (chunk: Buffer) => {
    lingering.activity();
    stdoutLines.push(chunk);
  });
  child.stderr.on("data", (chunk: Buffer) => {
    lingering.activity();
    stderrTail.push(chunk);
  });
  child.stdin.on("error", ignore);
  child.stdout.on("error", ignore);
  child.stderr.on("error", ignore);
  child.on("error", ignore);
  child.on("exit", () => lingering.processExited());

  outbox.send({ msg: { case: "started", value: { pid } } });

  let cancelled = false;
  let stdinFull = false;
  /** A last line of the agent's own for the stderr tail. */
  let stderrNote: string | undefined;
  let stdinClosed = false;
  let failure: RpcError | undefined;

  const closeStdin = () => {
    stdinClosed = true;
    if (!child.stdin.writableEnded) child.stdin.end();
  };

  const forward = (text: string) => {
    const checked = checkClientMessage(text);
    if (!checked.ok) {
      outbox.send({ msg: { case: "message", value: checked.reply } });
      return;
    }
    if (stdinClosed) {
      outbox.send({
        msg: { case: "message", value: errorReply(checked.id, STDIN_CLOSED, "the MCP server's stdin is closed") },
      });
      return;
    }
    if (!child.stdin.write(checked.line) && !stdinFull) {
      // The server is not reading: stop reading requests until it catches up
      // (the call reads no message ahead, so nothing more is taken off the connection).
      stdinFull = true;
      call.pause();
      const done = () => {
        child.stdin.off("drain", done);
        child.stdin.off("close", done);
        stdinFull = false;
        if (!cancelled && !failure) call.resume();
      };
      child.stdin.on("drain", done);
      child.stdin.on("close", done);
    }
  };

  const onMessage = (req: pb.McpStdioRequest) => {
    if (cancelled || failure) return;
    switch (req.msg.case) {
      case "message":
        forward(req.msg.value);
        break;
      case "closeStdin":
        if (req.msg.value) closeStdin();
        break;
      case "start":
        failure = invalidArgument("start sent twice");
        killSession(pid);
        break;
      default:
        break; // a message kind this agent does not know
    }
  };
  const onEnd = () => {
    if (!cancelled) closeStdin();
  };
  const onCancelled = () => {
    if (cancelled) return;
    cancelled = true;
    outbox.close();
    killSession(pid);
    lingering.dispose();
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
  };
  let markFinished!: () => void;
  const finished = new Promise<void>((resolve) => (markFinished = resolve));

  call.on("data", onMessage);
  call.on("end", onEnd);
  call.on("cancelled", onCancelled);
  if (call.cancelled) onCancelled();
  trackChild(ctx, {
    pid,
    finished,
    shutdown: () => {
      if (cancelled || failure) return;
      stderrNote = `memoh-agent: the agent is shutting down; MCP server ${spec.command} (pid ${pid}) was killed`;
      killSession(pid);
    },
  });
  call.resume();

  let status: ExitStatus;
  try {
    status = await closed;
  } finally {
    lingering.dispose();
    child.stdin.destroy();
    call.off("data", onMessage);
    call.off("end", onEnd);
    call.off("cancelled", onCancelled);
    ctx.children.delete(child);
    markFinished();
  }
  if (cancelled) return;
  if (failure) throw failure;
  stdoutLines.flush();
  if (stderrNote) stderrTail.add(stderrNote);
  outbox.send({ msg: { case: "exit", value: { code: status.code, signal: status.signal, stderrTail: stderrTail.lines() } } });
}
