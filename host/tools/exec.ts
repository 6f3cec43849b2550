// exec: a shell command in the workspace (/bin/sh -c), its stdout, stderr and exit code.
// Output beyond the limits keeps its head and tail. While it runs, a progress
// notification a second; a call the client cancels (or a client that goes away)
// cancels the Exec, and the agent kills the command's whole process group.
import * as z from "zod";
import { WorkspaceError } from "../workspace/errors.js";
import { OutputCollector } from "./output.js";
import { defineTool, textResult, ToolError } from "./tool.js";

export const EXEC_DEFAULT_TIMEOUT_S = 30;
export const EXEC_MAX_TIMEOUT_S = 600;

export interface ExecOutcome {
  exitCode: number;
  signal: string;
  timedOut: boolean;
  durationMs: number;
  stdout: OutputCollector;
  stderr: OutputCollector;
}

/** The text the model reads for a finished command. */
export function renderExec(o: ExecOutcome, timeoutS: number): string {
  const seconds = (o.durationMs / 1000).toFixed(1);
  let status = `exit code ${o.exitCode}`;
  if (o.timedOut) status = `timed out after ${timeoutS} s and was killed (exit code ${o.exitCode})`;
  else if (o.signal !== "") status = `killed by ${o.signal} (exit code ${o.exitCode})`;
  const stream = (name: string, c: OutputCollector) => {
    if (c.total === 0) return `--- ${name}: empty ---\n`;
    const t = c.text();
    return `--- ${name} (${t.totalBytes} bytes, ${t.totalLines} lines${t.truncated ? ", truncated" : ""}) ---\n${t.text}${t.text.endsWith("\n") ? "" : "\n"}`;
  };
  return `[${status}, ${seconds} s]\n${stream("stdout", o.stdout)}${stream("stderr", o.stderr)}`;
}

function noShell(err: unknown): boolean {
  return err instanceof WorkspaceError && /\/bin\/sh not found/.test(err.message);
}

export const execTool = defineTool({
  name: "exec",
  title: "Run a command",
  description:
    `Runs a shell command (/bin/sh -c) in the workspace and returns its exit code, stdout and stderr. ` +
    `Output over 64 KiB or 2,000 lines keeps its head and tail with a marker between. ` +
    `The command is killed with its child processes after timeout seconds (default ${EXEC_DEFAULT_TIMEOUT_S}, at most ${EXEC_MAX_TIMEOUT_S}). ` +
    "It runs as root in work_dir (default /data) with the image's environment; files under /data persist.",
  inputSchema: z.strictObject({
    command: z.string().min(1).max(256 * 1024).describe("The command, run by /bin/sh -c"),
    work_dir: z.string().min(1).max(4096).default("/data").describe("The working directory (default /data)"),
    timeout: z.number().int().min(1).max(EXEC_MAX_TIMEOUT_S).default(EXEC_DEFAULT_TIMEOUT_S).describe(`Seconds before the command is stopped (default ${EXEC_DEFAULT_TIMEOUT_S}, at most ${EXEC_MAX_TIMEOUT_S})`),
  }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
  async run(args, ctx) {
    const stdout = new OutputCollector();
    const stderr = new OutputCollector();
    const started = Date.now();
    const ticker = setInterval(() => {
      const s = Math.floor((Date.now() - started) / 1000);
      void ctx.progress(s, args.timeout, `running for ${s} s; ${stdout.total + stderr.total} bytes of output so far`);
    }, 1000);
    try {
      const r = await ctx.call((c) =>
        c.exec(
          { command: args.command, cwd: args.work_dir, timeoutMs: args.timeout * 1000, closeStdin: true },
          { signal: ctx.signal, maxOutputBytes: 0, onStdout: (d) => stdout.push(d), onStderr: (d) => stderr.push(d), timeoutMs: (args.timeout + 30) * 1000 },
        ),
      );
      return textResult(renderExec({ exitCode: r.code, signal: r.signal, timedOut: r.timedOut, durationMs: r.durationMs, stdout, stderr }, args.timeout));
    } catch (err) {
      if (noShell(err)) throw new ToolError("this workspace's image has no shell (/bin/sh), so exec cannot run commands in it; use the file tools (read, write, list, edit, apply_patch) instead");
      throw err;
    } finally {
      clearInterval(ticker);
    }
  },
});
