// The background-job tools: list_background, get_background_status, kill_background
// and wait_until, over the agent's job RPCs (jobs live in the agent, so they outlive
// the gateway's sessions and the orchestrator itself). exec starts jobs too.
import * as z from "zod";
import { JobState, JobStream, WaitOutcome, type JobInfo } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { WorkspaceError } from "../workspace/errors.js";
import { truncateOutput } from "./truncate.js";
import { defineTool, textResult, ToolError, type ToolContext } from "./tool.js";

/** Bytes of each stream an output tail shows. */
export const TAIL_BYTES = 8 * 1024;
export const WAIT_DEFAULT_TIMEOUT_S = 120;
export const WAIT_DEFAULT_IDLE_S = 20;
export const WAIT_MAX_S = 3600;

export const taskIdSchema = z
  .string()
  .regex(/^job-[0-9a-f]{12}$/, "task_id is a job id such as job-0123456789ab, as exec (run_in_background) or list_background reported it")
  .describe("The job's id (job-…), as exec or list_background reported it");

/** How a job stands, in the words the tools use. */
export function jobStatus(job: JobInfo): "running" | "completed" | "failed" | "killed" {
  if (job.state === JobState.RUNNING) return "running";
  if (job.state === JobState.KILLED) return "killed";
  return job.exitCode === 0 && job.signal === "" ? "completed" : "failed";
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

export function runtimeMs(job: JobInfo, now = Date.now()): number {
  const end = job.endedAtMs > 0n ? Number(job.endedAtMs) : now;
  return Math.max(0, end - Number(job.startedAtMs));
}

/** One line about a job: id, status, exit, runtime, pid, command. */
export function jobLine(job: JobInfo): string {
  const status = jobStatus(job);
  let detail: string = status;
  if (status !== "running") {
    detail += job.signal !== "" ? ` (${job.signal}, exit code ${job.exitCode})` : ` (exit code ${job.exitCode})`;
    if (job.timedOut) detail += ` after its limit of ${seconds(job.timeoutMs)}`;
  }
  return `${job.id}  ${detail}  ${seconds(runtimeMs(job))}  pid ${job.pid}  ${job.command}`;
}

/** The last bytes of a job's stdout and stderr, as text sections. */
export async function outputTail(c: BridgeClient, job: JobInfo, signal?: AbortSignal): Promise<string> {
  let out = "";
  for (const [name, stream, total] of [["stdout", JobStream.STDOUT, job.stdoutBytes], ["stderr", JobStream.STDERR, job.stderrBytes]] as const) {
    if (total === 0n) {
      out += `--- ${name}: empty ---\n`;
      continue;
    }
    const r = await c.readJobOutput({ id: job.id, stream, tailBytes: TAIL_BYTES }, { signal });
    const t = truncateOutput(Buffer.from(r.data).toString("utf8"));
    const first = r.offset > 0n ? `last ${r.data.byteLength} of ${r.total} bytes` : `${r.total} bytes`;
    out += `--- ${name} (${first}${t.truncated ? ", truncated" : ""}) ---\n${t.text}${t.text.endsWith("\n") ? "" : "\n"}`;
  }
  return out;
}

function noSuchJob(err: unknown, id: string): never {
  if ((err instanceof WorkspaceError ? err.code === "not_found" : rpcCode(err) === Status.NOT_FOUND) && (err as Error).message.includes(`no job ${id}`)) {
    throw new ToolError(`there is no background job ${id} in this workspace: it never existed, or it ended long ago and was forgotten (or the workspace restarted); list_background shows the jobs there are`);
  }
  throw err;
}

export const listBackgroundTool = defineTool({
  name: "list_background",
  title: "List background jobs",
  description: "Lists the workspace's background jobs (started by exec with run_in_background, or moved there when exec outlived its timeout), newest first: id, status (running, completed, failed, killed), runtime, pid and command.",
  inputSchema: z.strictObject({}),
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async run(_args, ctx) {
    const jobs = await ctx.call((c) => c.listJobs({ signal: ctx.signal }));
    if (jobs.length === 0) return textResult("No background jobs.");
    return textResult(`${jobs.length} background job${jobs.length === 1 ? "" : "s"}:\n${jobs.map(jobLine).join("\n")}`);
  },
});

export const getBackgroundStatusTool = defineTool({
  name: "get_background_status",
  title: "Status of a background job",
  description: "A background job's status (running, completed, failed, killed), exit code, runtime and the tail of its stdout and stderr.",
  inputSchema: z.strictObject({ task_id: taskIdSchema }),
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    try {
      const text = await ctx.call(async (c) => {
        const job = await c.getJob(args.task_id, { signal: ctx.signal });
        return `${jobLine(job)}\n${await outputTail(c, job, ctx.signal)}`;
      });
      return textResult(text);
    } catch (err) {
      noSuchJob(err, args.task_id);
    }
  },
});

export const killBackgroundTool = defineTool({
  name: "kill_background",
  title: "Kill a background job",
  description: "Kills a background job with SIGKILL: its whole process group, so processes it started go too (also those left running by a job that has ended). Its output stays readable with get_background_status.",
  inputSchema: z.strictObject({ task_id: taskIdSchema }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    try {
      const text = await ctx.call(async (c) => {
        const before = await c.getJob(args.task_id, { signal: ctx.signal });
        // An ended job's group is signalled too: a process it started may still run in it.
        const job = await c.signalJob(args.task_id, "SIGKILL", { signal: ctx.signal });
        if (before.state !== JobState.RUNNING) return `Job ${args.task_id} had already ended (SIGKILL went to its process group for anything it left running): ${jobLine(job)}`;
        return job.state === JobState.RUNNING ? `Sent SIGKILL to job ${args.task_id}'s process group; it has not been reaped yet: ${jobLine(job)}` : `Killed job ${args.task_id} and its process group: ${jobLine(job)}`;
      });
      return textResult(text);
    } catch (err) {
      noSuchJob(err, args.task_id);
    }
  },
});

/** Why wait_until returned. */
export type WaitReason = "completed" | "failed" | "killed" | "idle" | "timeout";

export function waitReason(outcome: WaitOutcome, job: JobInfo): WaitReason {
  if (outcome === WaitOutcome.IDLE) return "idle";
  if (outcome === WaitOutcome.TIMEOUT) return "timeout";
  const s = jobStatus(job);
  return s === "running" ? "timeout" : s;
}

const REASON_TEXT: Record<WaitReason, string> = {
  completed: "the job completed",
  failed: "the job failed",
  killed: "the job was killed",
  idle: "the job is still running but wrote no output for the idle timeout",
  timeout: "the job is still running at the timeout",
};

/** Sends a progress notification every second while `work` runs. */
export async function withProgress<T>(ctx: ToolContext, total: number | undefined, message: (s: number) => string, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const ticker = setInterval(() => {
    const s = Math.floor((Date.now() - started) / 1000);
    void ctx.progress(s, total, message(s));
  }, 1000);
  try {
    return await work();
  } finally {
    clearInterval(ticker);
  }
}

export const waitUntilTool = defineTool({
  name: "wait_until",
  title: "Wait for a background job",
  description:
    `Waits until a background job ends, or has written no output for idle_timeout seconds (default ${WAIT_DEFAULT_IDLE_S}; 0 = never), or timeout seconds pass (default ${WAIT_DEFAULT_TIMEOUT_S}, at most ${WAIT_MAX_S}). ` +
    "Says why it returned (completed, failed, killed, idle, timeout) with the tail of the job's output. Cancelling the wait leaves the job running.",
  inputSchema: z.strictObject({
    task_id: taskIdSchema,
    timeout: z.number().int().min(1).max(WAIT_MAX_S).default(WAIT_DEFAULT_TIMEOUT_S).describe(`Seconds to wait at most (default ${WAIT_DEFAULT_TIMEOUT_S}, at most ${WAIT_MAX_S})`),
    idle_timeout: z.number().int().min(0).max(WAIT_MAX_S).default(WAIT_DEFAULT_IDLE_S).describe(`Return when the job wrote no output for this many seconds (default ${WAIT_DEFAULT_IDLE_S}; 0 = wait for the end or the timeout)`),
  }),
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    try {
      const text = await withProgress(ctx, args.timeout, (s) => `waiting for ${args.task_id} for ${s} s`, () =>
        ctx.call(async (c) => {
          const w = await c.waitJob(args.task_id, args.timeout * 1000, args.idle_timeout * 1000, { signal: ctx.signal });
          const reason = waitReason(w.outcome, w.job);
          return `[${reason}: ${REASON_TEXT[reason]}]\n${jobLine(w.job)}\n${await outputTail(c, w.job, ctx.signal)}`;
        }),
      );
      return textResult(text);
    } catch (err) {
      noSuchJob(err, args.task_id);
    }
  },
});
