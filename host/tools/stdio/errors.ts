// How an MCP stdio server's end is told: to the caller that started it (a
// WorkspaceError carrying the exit), and to MCP clients (a JSON-RPC error whose
// data holds the exit code and the stderr tail).
import { WorkspaceError, type WorkspaceErrorCode } from "../../workspace/errors.js";
import type { StdioExit } from "./channel.js";
import { STDERR_LINES_IN_MESSAGE } from "./limits.js";

/** "exited with code 3", "was killed by SIGKILL (exit code 137)". */
export function describeExit(exit: StdioExit): string {
  return exit.signal ? `was killed by ${exit.signal} (exit code ${exit.code})` : `exited with code ${exit.code}`;
}

/** The last stderr lines as a message suffix (all of them are in the structured data). */
export function stderrSuffix(exit: StdioExit): string {
  if (exit.stderrTail.length === 0) return "; it wrote nothing to stderr";
  const shown = exit.stderrTail.slice(-STDERR_LINES_IN_MESSAGE);
  return `; the end of its stderr:\n${shown.join("\n")}`;
}

/** The exit as JSON (snake_case, as the API speaks). */
export function exitJson(exit: StdioExit): { code: number; signal: string | null; stderr_tail: string[] } {
  return { code: exit.code, signal: exit.signal || null, stderr_tail: exit.stderrTail };
}

/** The server ended while it was being started; `exit` is set when it exited (rather than the stream breaking). */
export class McpServerStartError extends WorkspaceError {
  constructor(
    code: WorkspaceErrorCode,
    message: string,
    readonly exit: StdioExit | undefined,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "McpServerStartError";
  }
}
