// One MCP server on stdio inside a workspace, through the agent's McpStdio stream:
// start it, exchange JSON-RPC lines, learn how it ended. The agent's replies are
// untrusted: the order (started first), the exit report's size, are checked here.
import type { BridgeClient } from "../../bridge/client.js";
import type { McpStdioResponse } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcError, Status, fromServiceError } from "../../../proto/rpc.js";
import { MAX_QUEUED_INPUT_BYTES, STDERR_LINE_CHARS, STDERR_TAIL_LINES } from "./limits.js";

export interface StdioServerSpec {
  command: string;
  args: string[];
  env: Record<string, string>;
  /** Relative paths resolve against /data; empty = /data. */
  cwd: string;
  /** Empty = root (the same rules as Exec). */
  user: string;
}

/** How a server ended: its exit code (128 + n when killed by a signal), the signal, its last stderr lines. */
export interface StdioExit {
  code: number;
  signal: string;
  stderrTail: string[];
}

export interface StdioChannelHandlers {
  /** One JSON-RPC message the server wrote (a line of JSON text). */
  message(text: string): void;
  /** A stdout line that is not JSON-RPC. */
  noise(text: string): void;
  /** The server exited; nothing follows. */
  exit(exit: StdioExit): void;
  /** The stream broke without an exit (the agent went away, the call was cancelled); nothing follows. */
  failure(err: Error): void;
}

export interface StdioChannel {
  readonly pid: number;
  /** Writes one message to the server's stdin; false (nothing written) when too much input is already queued. */
  send(text: string): boolean;
  /** EOF on the server's stdin: the stdio way of asking it to exit. */
  closeStdin(): void;
  /** Ends the call: the agent kills the server's process group. */
  kill(): void;
  /** Stops (and resumes) reading the server's messages, so a slow HTTP client slows the server rather than filling memory. */
  pause(): void;
  resume(): void;
}

function boundedTail(lines: readonly string[]): string[] {
  return lines.slice(-STDERR_TAIL_LINES).map((l) => (l.length > STDERR_LINE_CHARS ? `${l.slice(0, STDERR_LINE_CHARS)} … [cut]` : l));
}

/**
 * Starts the server and resolves once the agent says it runs (its pid), or rejects with the
 * agent's status (NOT_FOUND for a command not on PATH, INVALID_ARGUMENT for a bad user or
 * cwd…). After that every event goes to `handlers`, ending with exactly one exit or failure.
 */
export function openStdioChannel(client: BridgeClient, spec: StdioServerSpec, handlers: StdioChannelHandlers): Promise<StdioChannel> {
  const call = client.mcpStdio();
  return new Promise<StdioChannel>((resolve, reject) => {
    let started = false;
    let ended = false;
    let exit: StdioExit | undefined;
    let stdinClosed = false;
    const end = (outcome: { exit: StdioExit } | { failure: Error }) => {
      if (ended) return;
      ended = true;
      if (!started) {
        reject("failure" in outcome ? outcome.failure : new RpcError(Status.INTERNAL, "bridge protocol violation: McpStdio ended before started"));
        return;
      }
      if ("exit" in outcome) handlers.exit(outcome.exit);
      else handlers.failure(outcome.failure);
    };
    const violation = (what: string) => {
      end({ failure: new RpcError(Status.INTERNAL, `bridge protocol violation: ${what}`) });
      call.cancel();
    };
    call.on("data", (reply: McpStdioResponse) => {
      if (ended) return;
      switch (reply.msg.case) {
        case "started": {
          if (started) return violation("McpStdio sent started twice");
          started = true;
          const pid = reply.msg.value.pid;
          resolve({
            pid,
            send(text) {
              if (ended || stdinClosed) return false;
              if (call.writableLength > MAX_QUEUED_INPUT_BYTES) return false;
              call.write({ msg: { case: "message", value: text } });
              return true;
            },
            closeStdin() {
              if (ended || stdinClosed) return;
              stdinClosed = true;
              call.write({ msg: { case: "closeStdin", value: true } });
            },
            kill() {
              if (ended) return;
              end({ failure: new RpcError(Status.CANCELLED, "the MCP server was stopped") });
              call.cancel();
            },
            pause: () => call.pause(),
            resume: () => call.resume(),
          });
          return;
        }
        case "message":
          if (!started) return violation("McpStdio sent a message before started");
          handlers.message(reply.msg.value);
          return;
        case "stdoutNoise":
          if (!started) return violation("McpStdio sent output before started");
          handlers.noise(reply.msg.value);
          return;
        case "exit":
          if (!started) return violation("McpStdio sent exit before started");
          exit = { code: reply.msg.value.code, signal: reply.msg.value.signal, stderrTail: boundedTail(reply.msg.value.stderrTail) };
          return;
        default:
          return; // a reply kind this host does not know
      }
    });
    call.on("error", (err: Error) => end({ failure: fromServiceError(err) }));
    call.on("end", () => {
      if (exit !== undefined) end({ exit });
      else end({ failure: new RpcError(Status.INTERNAL, "bridge protocol violation: McpStdio ended without an exit") });
    });
    call.write({ msg: { case: "start", value: { command: spec.command, args: spec.args, env: spec.env, cwd: spec.cwd, user: spec.user } } });
  });
}
