// The agent's background jobs. A job is a process started like an Exec (same
// command, environment, user and working-directory rules, agent/exec/*) but tied to
// no call: it leads its own process group, its stdin is closed, its stdout and
// stderr go to two ring files in <dir>/<id>/, and it runs until it ends, is
// signalled, or passes its runtime limit (then its whole group is SIGKILLed).
// Ended jobs are kept for the retention time (and at most maxEnded of them).
// Jobs live as long as the agent: a new agent clears the job dir it inherits.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { JobState, WaitOutcome, type JobInfoSchema } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { notFound, resourceExhausted, RpcError, Status } from "../errors.js";
import { killGroup } from "../exec/children.js";
import type { ExecSpec } from "../exec/command.js";
import { setChildOomScore } from "../exec/oom.js";
import { spawnProcess } from "../exec/process.js";
import type { RunningProcess } from "../exec/running.js";
import type { ExitStatus } from "../exec/signals.js";
import { logLine } from "../log.js";
import type { JobsConfig } from "./config.js";
import { FileStorage, Ring } from "./ring.js";

export const JOB_ID_PATTERN = /^job-[0-9a-f]{12}$/;
/** JobInfo.command is cut to this many characters (a listing of every job must fit a message). */
const COMMAND_SHOWN_CHARS = 1000;
/** How long SignalJob waits for the job to end before it answers. */
const SIGNAL_SETTLE_MS = 1000;
const PRUNE_INTERVAL_MS = 60_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

export type JobInfoInit = MessageInitShape<typeof JobInfoSchema>;

interface Job {
  id: string;
  command: string;
  cwd: string;
  pid: number;
  proc: RunningProcess;
  dir: string;
  stdout: Ring;
  stderr: Ring;
  startedAt: number;
  endedAt: number;
  lastOutputAt: number;
  timeoutMs: number;
  timedOut: boolean;
  killedByRequest: boolean;
  status: ExitStatus | undefined;
  /** Called on every change: output, end. */
  listeners: Set<() => void>;
  timer: NodeJS.Timeout | undefined;
  writeFailed: boolean;
}

export class JobManager {
  private readonly jobs = new Map<string, Job>();
  private readonly pruner: NodeJS.Timeout;
  private dirReady: Promise<void> | undefined;

  constructor(
    private readonly ctx: AgentContext,
    readonly config: JobsConfig,
  ) {
    this.pruner = setInterval(() => this.prune(), PRUNE_INTERVAL_MS);
    this.pruner.unref();
  }

  /** Creates the job dir and removes what an earlier agent left in it (its jobs died with it). */
  private prepareDir(): Promise<void> {
    this.dirReady ??= (async () => {
      await fs.promises.mkdir(this.config.dir, { recursive: true, mode: 0o700 });
      for (const name of await fs.promises.readdir(this.config.dir)) {
        if (JOB_ID_PATTERN.test(name) && !this.jobs.has(name)) await fs.promises.rm(path.join(this.config.dir, name), { recursive: true, force: true });
      }
    })().catch((err: unknown) => {
      this.dirReady = undefined;
      throw new RpcError(Status.FAILED_PRECONDITION, `cannot use the job dir ${this.config.dir}: ${err instanceof Error ? err.message : String(err)}`);
    });
    return this.dirReady;
  }

  runningCount(): number {
    let n = 0;
    for (const j of this.jobs.values()) if (j.status === undefined) n++;
    return n;
  }

  async start(spec: ExecSpec, command: string, timeoutMs: number): Promise<JobInfoInit> {
    this.prune();
    if (this.runningCount() >= this.config.maxRunning) {
      throw resourceExhausted(`${this.config.maxRunning} jobs are running already (the agent's limit); wait for one to end or kill one`);
    }
    await this.prepareDir();
    let id: string;
    do id = `job-${randomBytes(6).toString("hex")}`;
    while (this.jobs.has(id));
    const dir = path.join(this.config.dir, id);
    await fs.promises.mkdir(dir, { mode: 0o700 });
    let stdout: Ring | undefined;
    let stderr: Ring | undefined;
    let job: Job | undefined;
    const pending: Array<() => void> = [];
    try {
      stdout = new Ring(FileStorage.create(path.join(dir, "stdout")), this.config.ringBytes);
      stderr = new Ring(FileStorage.create(path.join(dir, "stderr")), this.config.ringBytes);
      const rings = { stdout, stderr };
      const onOutput = (ring: Ring, data: Uint8Array) => {
        if (!job) {
          pending.push(() => onOutput(ring, data));
          return;
        }
        try {
          ring.write(data);
        } catch (err) {
          if (!job.writeFailed) logLine(`job ${job.id}: writing its output failed (${String(err)}); output is dropped from now on`);
          job.writeFailed = true;
        }
        job.lastOutputAt = Date.now();
        this.notify(job);
      };
      const proc = await spawnProcess(spec, {
        stdout: (d) => onOutput(rings.stdout, d),
        stderr: (d) => onOutput(rings.stderr, d),
        exited: (status) => {
          if (job) this.ended(job, status);
          else pending.push(() => this.ended(job!, status));
        },
      });
      setChildOomScore(this.ctx, proc.pid);
      this.ctx.children.add(proc);
      proc.closeStdin();
      job = {
        id,
        command: command.length > COMMAND_SHOWN_CHARS ? `${command.slice(0, COMMAND_SHOWN_CHARS)}…` : command,
        cwd: spec.cwd,
        pid: proc.pid,
        proc,
        dir,
        stdout,
        stderr,
        startedAt: Date.now(),
        endedAt: 0,
        lastOutputAt: 0,
        timeoutMs,
        timedOut: false,
        killedByRequest: false,
        status: undefined,
        listeners: new Set(),
        timer: undefined,
        writeFailed: false,
      };
      const j = job;
      j.timer = setTimeout(() => {
        j.timedOut = true;
        logLine(`job ${j.id} (pid ${j.pid}) ran past its limit of ${timeoutMs} ms: killing its process group`);
        proc.kill("SIGKILL");
      }, Math.min(timeoutMs, MAX_TIMER_MS));
      this.jobs.set(id, j);
      for (const p of pending) p();
      return this.info(j);
    } catch (err) {
      stdout?.close();
      stderr?.close();
      await fs.promises.rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  private ended(job: Job, status: ExitStatus): void {
    if (job.status) return;
    job.status = status;
    job.endedAt = Date.now();
    clearTimeout(job.timer);
    this.ctx.children.delete(job.proc);
    this.notify(job);
  }

  private notify(job: Job): void {
    for (const l of [...job.listeners]) l();
  }

  get(id: string): Job {
    const job = this.jobs.get(id);
    if (!job) throw notFound(`no job ${id} (it never existed, or ended more than ${Math.round(this.config.retentionMs / 1000)} s ago and was forgotten)`);
    return job;
  }

  info(job: Job): JobInfoInit {
    const st = job.status;
    let state = JobState.RUNNING;
    if (st) state = job.timedOut || (job.killedByRequest && st.signal !== "") ? JobState.KILLED : JobState.EXITED;
    return {
      id: job.id,
      command: job.command,
      cwd: job.cwd,
      pid: job.pid,
      state,
      exitCode: st?.code ?? 0,
      signal: st?.signal ?? "",
      startedAtMs: BigInt(job.startedAt),
      endedAtMs: BigInt(job.endedAt),
      stdoutBytes: BigInt(job.stdout.total),
      stderrBytes: BigInt(job.stderr.total),
      lastOutputAtMs: BigInt(job.lastOutputAt),
      timeoutMs: job.timeoutMs,
      timedOut: job.timedOut,
      killedByRequest: job.killedByRequest,
      outputRingBytes: this.config.ringBytes,
    };
  }

  list(): JobInfoInit[] {
    this.prune();
    return [...this.jobs.values()].sort((a, b) => b.startedAt - a.startedAt).map((j) => this.info(j));
  }

  ring(job: Job, stream: "stdout" | "stderr"): Ring {
    return stream === "stdout" ? job.stdout : job.stderr;
  }

  /** Waits for the end, the timeout, or idle output (no output for idleMs; 0 = no idle check). */
  wait(job: Job, timeoutMs: number, idleMs: number, cancelled: Promise<void>): Promise<{ outcome: WaitOutcome; job: JobInfoInit }> {
    const since = Date.now();
    return new Promise((resolve) => {
      let idleTimer: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (outcome: WaitOutcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(idleTimer);
        job.listeners.delete(onChange);
        resolve({ outcome, job: this.info(job) });
      };
      const armIdle = () => {
        if (idleMs <= 0) return;
        clearTimeout(idleTimer);
        const quietSince = Math.max(since, job.lastOutputAt);
        const left = quietSince + idleMs - Date.now();
        if (left <= 0) finish(WaitOutcome.IDLE);
        else idleTimer = setTimeout(armIdle, left);
      };
      const onChange = () => {
        if (job.status) finish(WaitOutcome.ENDED);
      };
      const timer = setTimeout(() => finish(job.status ? WaitOutcome.ENDED : WaitOutcome.TIMEOUT), timeoutMs);
      if (job.status) return finish(WaitOutcome.ENDED);
      job.listeners.add(onChange);
      armIdle();
      void cancelled.then(() => finish(WaitOutcome.TIMEOUT));
    });
  }

  /**
   * Signals the job's process group. An ended job's group is signalled too (a
   * process it started may still run in it). Waits up to a second for a
   * running job to end, so the answer of a kill shows it ended.
   */
  async signal(job: Job, signal: NodeJS.Signals): Promise<JobInfoInit> {
    if (job.status === undefined) job.killedByRequest = true;
    killGroup(job.pid, signal);
    if (job.status === undefined) await this.wait(job, SIGNAL_SETTLE_MS, 0, new Promise(() => undefined));
    return this.info(job);
  }

  /** Forgets ended jobs past the retention time, and the oldest ended ones beyond maxEnded. */
  prune(now = Date.now()): void {
    const ended = [...this.jobs.values()].filter((j) => j.status !== undefined).sort((a, b) => a.endedAt - b.endedAt);
    let excess = ended.length - this.config.maxEnded;
    for (const j of ended) {
      if (excess > 0 || now - j.endedAt >= this.config.retentionMs) {
        excess--;
        this.forget(j);
      }
    }
  }

  private forget(job: Job): void {
    this.jobs.delete(job.id);
    job.stdout.close();
    job.stderr.close();
    fs.rm(job.dir, { recursive: true, force: true }, () => undefined);
  }

  /** Stops the pruner; kills every running job's group (agent shutdown also does through ctx.children). */
  close(): void {
    clearInterval(this.pruner);
    for (const j of this.jobs.values()) if (j.status === undefined) j.proc.kill("SIGKILL");
  }
}
