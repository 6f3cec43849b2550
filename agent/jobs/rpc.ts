// The job RPCs of ContainerService: every field validated (INVALID_ARGUMENT with
// the field's name), then handed to the agent's JobManager.
import type * as grpc from "@grpc/grpc-js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { JobStream } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { parseExecStart } from "../exec/command.js";
import { parseSignal } from "../exec/signals.js";
import { logLine } from "../log.js";
import { MiB } from "../limits.js";
import { jobsConfigFromEnv, type JobsConfig } from "./config.js";
import { JOB_ID_PATTERN, JobManager } from "./manager.js";

/** Bytes ReadJobOutput returns when the request sets no max_bytes, and the most it returns. */
export const JOB_READ_DEFAULT_BYTES = 64 * 1024;
export const JOB_READ_MAX_BYTES = 4 * MiB;
/** Longest WaitJob. */
export const JOB_WAIT_MAX_MS = 60 * 60_000;

const managers = new WeakMap<AgentContext, JobManager>();

/** The agent's job manager, created on first use with the limits of BRIDGE_JOB_* (or `config`). */
export function jobsOf(ctx: AgentContext, config?: JobsConfig): JobManager {
  let m = managers.get(ctx);
  if (!m) {
    let cfg = config;
    if (!cfg) {
      const parsed = jobsConfigFromEnv(process.env);
      for (const p of parsed.problems) logLine(p);
      cfg = parsed.config;
    }
    m = new JobManager(ctx, cfg);
    managers.set(ctx, m);
  }
  return m;
}

function jobId(id: string): string {
  if (id === "") throw invalidArgument("id is empty: give the id StartJob or ListJobs reported (job-<12 hex digits>)");
  if (!JOB_ID_PATTERN.test(id)) throw invalidArgument(`id ${JSON.stringify(id.slice(0, 100))} is not a job id (job-<12 hex digits>)`);
  return id;
}

function commandText(start: pb.ExecStart): string {
  return start.command !== "" ? start.command : start.argv.join(" ");
}

export async function startJob(ctx: AgentContext, req: pb.StartJobRequest) {
  const start = req.exec;
  if (!start) throw invalidArgument("exec is missing: set exec.argv or exec.command");
  if (start.pty) throw invalidArgument("exec.pty is not supported for jobs: a job has no terminal");
  if (start.stdin.byteLength > 0) throw invalidArgument("exec.stdin is not supported for jobs: a job's stdin is closed at start");
  const jobs = jobsOf(ctx);
  const limit = jobs.config.maxRuntimeMs;
  if (start.timeoutMs > limit) throw invalidArgument(`exec.timeout_ms ${start.timeoutMs} is over the agent's job runtime limit of ${limit} ms`);
  const spec = await parseExecStart(ctx, start);
  return { job: await jobs.start(spec, commandText(start), start.timeoutMs || limit) };
}

export async function listJobs(ctx: AgentContext) {
  return { jobs: jobsOf(ctx).list() };
}

export async function getJob(ctx: AgentContext, req: pb.GetJobRequest) {
  const jobs = jobsOf(ctx);
  return { job: jobs.info(jobs.get(jobId(req.id))) };
}

export async function readJobOutput(ctx: AgentContext, req: pb.ReadJobOutputRequest) {
  const id = jobId(req.id);
  let stream: "stdout" | "stderr";
  if (req.stream === JobStream.STDOUT) stream = "stdout";
  else if (req.stream === JobStream.STDERR) stream = "stderr";
  else throw invalidArgument("stream must be JOB_STREAM_STDOUT or JOB_STREAM_STDERR");
  if (req.offset < 0n) throw invalidArgument(`offset ${req.offset} is negative`);
  if (req.maxBytes > JOB_READ_MAX_BYTES) throw invalidArgument(`max_bytes ${req.maxBytes} is over the limit of ${JOB_READ_MAX_BYTES}`);
  if (req.tailBytes > JOB_READ_MAX_BYTES) throw invalidArgument(`tail_bytes ${req.tailBytes} is over the limit of ${JOB_READ_MAX_BYTES}`);
  if (req.tailBytes > 0 && (req.offset > 0n || req.maxBytes > 0)) throw invalidArgument("set tail_bytes, or offset and max_bytes, not both");
  const jobs = jobsOf(ctx);
  const job = jobs.get(id);
  const ring = jobs.ring(job, stream);
  const offset = Number(req.offset);
  if (offset > ring.total) throw invalidArgument(`offset ${offset} is past the end of ${stream} (${ring.total} bytes written so far)`);
  const r = req.tailBytes > 0 ? ring.tail(req.tailBytes) : ring.read(offset, req.maxBytes || JOB_READ_DEFAULT_BYTES);
  const info = jobs.info(job);
  return {
    data: r.data,
    offset: BigInt(r.offset),
    total: BigInt(ring.total),
    dropped: BigInt(r.dropped),
    eof: info.endedAtMs !== 0n && r.offset + r.data.byteLength === ring.total,
  };
}

export async function waitJob(ctx: AgentContext, req: pb.WaitJobRequest, call: grpc.ServerUnaryCall<unknown, unknown>) {
  const id = jobId(req.id);
  if (req.timeoutMs === 0) throw invalidArgument("timeout_ms is 0: give the longest time to wait (at most 1 hour)");
  if (req.timeoutMs > JOB_WAIT_MAX_MS) throw invalidArgument(`timeout_ms ${req.timeoutMs} is over the limit of ${JOB_WAIT_MAX_MS} (1 hour)`);
  if (req.idleTimeoutMs > JOB_WAIT_MAX_MS) throw invalidArgument(`idle_timeout_ms ${req.idleTimeoutMs} is over the limit of ${JOB_WAIT_MAX_MS} (1 hour)`);
  const jobs = jobsOf(ctx);
  const job = jobs.get(id);
  const cancelled = new Promise<void>((resolve) => {
    if (call.cancelled) resolve();
    call.once("cancelled", () => resolve());
  });
  return jobs.wait(job, req.timeoutMs, req.idleTimeoutMs, cancelled);
}

export async function signalJob(ctx: AgentContext, req: pb.SignalJobRequest) {
  const id = jobId(req.id);
  const signal = req.signal === "" ? "SIGKILL" : parseSignal(req.signal);
  const jobs = jobsOf(ctx);
  return { job: await jobs.signal(jobs.get(id), signal) };
}
