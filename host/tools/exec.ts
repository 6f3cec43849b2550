// exec: a shell command in the workspace (/bin/sh -c), its stdout, stderr and exit code.
// Every command runs as an agent job (jobs.ts), so it belongs to the agent, not to
// this call: with run_in_background the tool answers at once with the job's id; in
// the foreground it follows the job's output until it ends, and a command still
// running at the timeout is left running in the background (the result says so and
// gives the id for wait_until) instead of being killed and lost. Output beyond the
// limits keeps its head and tail. While it runs, a progress notification a second; a
// call the client cancels (or a client that goes away) kills the job's whole process
// group.
import * as z from "zod";
import { JobState, JobStream, type JobInfo } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { WorkspaceError } from "../workspace/errors.js";
import { jobLine } from "./jobs.js";
import { OutputCollector } from "./output.js";
import { defineTool, fromOlderAgent, textResult, ToolError, type ToolContext } from "./tool.js";

export const EXEC_DEFAULT_TIMEOUT_S = 30;
export const EXEC_MAX_TIMEOUT_S = 600;
/** How long one wait on the agent lasts before the tool reads output and reports progress. */
const SLICE_MS = 1000;
/** Bytes read from a stream in one call. */
const READ_BYTES = 1024 * 1024;

export interface ExecOutcome {
  exitCode: number;
  signal: string;
  timedOut: boolean;
  durationMs: number;
  stdout: OutputCollector;
  stderr: OutputCollector;
}

function streamText(name: string, c: OutputCollector): string {
  if (c.total === 0) return `--- ${name}: empty ---\n`;
  const t = c.text();
  return `--- ${name} (${t.totalBytes} bytes, ${t.totalLines} lines${t.truncated ? ", truncated" : ""}) ---\n${t.text}${t.text.endsWith("\n") ? "" : "\n"}`;
}

/** The text the model reads for a finished command. */
export function renderExec(o: ExecOutcome, timeoutS: number): string {
  const seconds = (o.durationMs / 1000).toFixed(1);
  let status = `exit code ${o.exitCode}`;
  if (o.timedOut) status = `timed out after ${timeoutS} s and was killed (exit code ${o.exitCode})`;
  else if (o.signal !== "") status = `killed by ${o.signal} (exit code ${o.exitCode})`;
  return `[${status}, ${seconds} s]\n${streamText("stdout", o.stdout)}${streamText("stderr", o.stderr)}`;
}

function noShell(err: unknown): boolean {
  return err instanceof WorkspaceError && /\/bin\/sh not found/.test(err.message);
}

/**
 * An agent older than jobs: the command runs through Exec and is killed at its timeout,
 * as exec did before jobs existed.
 */
async function runOnExec(c: BridgeClient, ctx: ToolContext, command: string, workDir: string, timeoutS: number): Promise<string> {
  const stdout = new OutputCollector();
  const stderr = new OutputCollector();
  const started = Date.now();
  const ticker = setInterval(() => {
    const s = Math.floor((Date.now() - started) / 1000);
    void ctx.progress(s, timeoutS, `running for ${s} s; ${stdout.total + stderr.total} bytes of output so far`);
  }, 1000);
  try {
    const r = await c.exec(
      { command, cwd: workDir, timeoutMs: timeoutS * 1000, closeStdin: true },
      { signal: ctx.signal, maxOutputBytes: 0, onStdout: (d) => stdout.push(d), onStderr: (d) => stderr.push(d), timeoutMs: (timeoutS + 30) * 1000 },
    );
    return renderExec({ exitCode: r.code, signal: r.signal, timedOut: r.timedOut, durationMs: r.durationMs, stdout, stderr }, timeoutS);
  } finally {
    clearInterval(ticker);
  }
}

/** Reads a job's stdout and stderr from where the last read stopped. */
class JobOutput {
  readonly stdout = new OutputCollector();
  readonly stderr = new OutputCollector();
  private readonly offsets = { stdout: 0n, stderr: 0n };
  /** Bytes the job's rings dropped before they could be read. */
  dropped = 0n;

  constructor(private readonly id: string) {}

  async drain(c: BridgeClient, job: JobInfo, signal?: AbortSignal): Promise<void> {
    for (const [name, stream, total] of [["stdout", JobStream.STDOUT, job.stdoutBytes], ["stderr", JobStream.STDERR, job.stderrBytes]] as const) {
      while (this.offsets[name] < total) {
        const r = await c.readJobOutput({ id: this.id, stream, offset: this.offsets[name], maxBytes: READ_BYTES }, { signal });
        this.dropped += r.dropped;
        this[name].push(r.data);
        this.offsets[name] = r.offset + BigInt(r.data.byteLength);
        if (r.data.byteLength === 0) break;
      }
    }
  }
}

async function runForeground(c: BridgeClient, ctx: ToolContext, job: JobInfo, timeoutS: number): Promise<string> {
  const out = new JobOutput(job.id);
  const deadline = Date.now() + timeoutS * 1000;
  let current = job;
  for (;;) {
    const left = deadline - Date.now();
    if (current.state === JobState.RUNNING && left > 0) {
      current = (await c.waitJob(job.id, Math.min(SLICE_MS, left), 0, { signal: ctx.signal })).job;
    }
    await out.drain(c, current, ctx.signal);
    const dropped = out.dropped > 0n ? `[${out.dropped} bytes of output went by faster than they could be read and are not shown]\n` : "";
    if (current.state !== JobState.RUNNING) {
      const durationMs = Number(current.endedAtMs - current.startedAtMs);
      return dropped + renderExec({ exitCode: current.exitCode, signal: current.signal, timedOut: current.timedOut, durationMs, stdout: out.stdout, stderr: out.stderr }, timeoutS);
    }
    if (Date.now() >= deadline) {
      return (
        `[still running after ${timeoutS} s: moved to the background as job ${job.id} (pid ${current.pid}); ` +
        `wait_until {"task_id":"${job.id}"} waits for it, get_background_status shows its output, kill_background stops it]\n` +
        `${jobLine(current)}\n${dropped}${streamText("stdout so far", out.stdout)}${streamText("stderr so far", out.stderr)}`
      );
    }
    const s = Math.floor((Date.now() - Number(job.startedAtMs)) / 1000);
    void ctx.progress(s, timeoutS, `running for ${s} s; ${out.stdout.total + out.stderr.total} bytes of output so far`);
  }
}

export const execTool = defineTool({
  name: "exec",
  title: "Run a command",
  description:
    `Runs a shell command (/bin/sh -c) in the workspace and returns its exit code, stdout and stderr. ` +
    `Output over 64 KiB or 2,000 lines keeps its head and tail with a marker between. ` +
    `A command still running after timeout seconds (default ${EXEC_DEFAULT_TIMEOUT_S}, at most ${EXEC_MAX_TIMEOUT_S}) is not killed: it moves to the background and the result gives its job id ` +
    "(use wait_until, get_background_status, kill_background). With run_in_background the command starts as a background job and the tool returns its id at once. " +
    "A background job is killed after the workspace's job limit (30 minutes unless configured). It runs as root in work_dir (default /data) with the image's environment; files under /data persist.",
  inputSchema: z.strictObject({
    command: z.string().min(1).max(256 * 1024).describe("The command, run by /bin/sh -c"),
    work_dir: z.string().min(1).max(4096).default("/data").describe("The working directory (default /data)"),
    timeout: z.number().int().min(1).max(EXEC_MAX_TIMEOUT_S).default(EXEC_DEFAULT_TIMEOUT_S).describe(`Seconds to wait for the command before it moves to the background (default ${EXEC_DEFAULT_TIMEOUT_S}, at most ${EXEC_MAX_TIMEOUT_S})`),
    run_in_background: z.boolean().default(false).describe("Start the command as a background job and return its id at once"),
  }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
  async run(args, ctx) {
    let job: JobInfo | undefined;
    try {
      return textResult(
        await ctx.call(async (c) => {
          try {
            job = await c.startJob({ command: args.command, cwd: args.work_dir }, { signal: ctx.signal });
          } catch (err) {
            if (!fromOlderAgent(err)) throw err;
            if (args.run_in_background) {
              throw new ToolError("this workspace's agent is older than background jobs; run the command without run_in_background, or restart the workspace so that its agent runs the current runtime bundle");
            }
            return runOnExec(c, ctx, args.command, args.work_dir, args.timeout);
          }
          if (args.run_in_background) {
            return `Started background job ${job.id} (pid ${job.pid}) in ${job.cwd}. wait_until {"task_id":"${job.id}"} waits for it, get_background_status shows its output, kill_background stops it.`;
          }
          return runForeground(c, ctx, job, args.timeout);
        }),
      );
    } catch (err) {
      if (noShell(err)) throw new ToolError("this workspace's image has no shell (/bin/sh), so exec cannot run commands in it; use the file tools (read, write, list, edit, apply_patch, grep, glob) instead");
      // A foreground command whose call was cancelled dies with its process group.
      if (job && !args.run_in_background && ctx.signal.aborted) {
        const id = job.id;
        await ctx.workspaces.call(ctx.botId, (c) => c.signalJob(id, "SIGKILL")).catch(() => undefined);
      }
      throw err;
    }
  },
});
