// Tasks: the running process of a container (runc via the io.containerd.runc.v2 shim).
//
// Output: stdout and stderr are given to Tasks.Create as the same `file://<path>`
// URI; the runc v2 shim then opens <path> for append and copies both streams into
// it (a plain path would be taken for a FIFO, `binary://` runs a logging binary).
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import { Tasks } from "../../proto/gen/containerd/services/tasks/v1/tasks_pb.js";
import { Status, type Process } from "../../proto/gen/containerd/types/task/task_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isNotFound } from "./errors.js";
import { runcOptionsAny, type RuncOptions } from "./containers.js";
import { timestampToDate, type MountSpec } from "./snapshots.js";
import { decodeResourceUsage, type ResourceUsage } from "./metrics.js";

export type TaskStatus = "unknown" | "created" | "running" | "stopped" | "paused" | "pausing";

export interface TaskInfo {
  id: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt: Date | undefined;
}

export interface TaskExitStatus {
  exitStatus: number;
  exitedAt: Date | undefined;
}

export interface CreateTaskOptions {
  /** The container's rootfs: Snapshots.Mounts of its snapshot key. */
  rootfs: MountSpec[];
  /** stdout and stderr are appended to this file (created with its parent dir). Default: no output kept. */
  logPath?: string;
  runcOptions?: RuncOptions;
}

export interface TaskMetrics {
  id: string;
  timestamp: Date | undefined;
  /** pids, CPU time and memory, decoded from the Any below when its type is known. */
  usage: ResourceUsage | undefined;
  /**
   * The shim's metrics as an Any: `io.containerd.cgroups.v1.Metrics` (cgroup v1)
   * or `io.containerd.cgroups.v2.Metrics`; the rest of it needs the cgroups protos.
   */
  typeUrl: string;
  value: Uint8Array;
}

/** Long enough for a task that runs for a day; Wait has no deadline of its own. */
const WAIT_TIMEOUT_MS = 24 * 60 * 60_000;

function statusName(s: Status): TaskStatus {
  switch (s) {
    case Status.CREATED:
      return "created";
    case Status.RUNNING:
      return "running";
    case Status.STOPPED:
      return "stopped";
    case Status.PAUSED:
      return "paused";
    case Status.PAUSING:
      return "pausing";
    default:
      return "unknown";
  }
}

function toTaskInfo(p: Process): TaskInfo {
  return { id: p.containerId || p.id, pid: p.pid, status: statusName(p.status), exitStatus: p.exitStatus, exitedAt: timestampToDate(p.exitedAt) };
}

export function signalNumber(signal: NodeJS.Signals | number): number {
  if (typeof signal === "number") return signal;
  const n = os.constants.signals[signal];
  if (n === undefined) throw new ContainerdError("invalid_argument", `unknown signal ${signal}`);
  return n;
}

export class TaskService {
  constructor(readonly conn: ContainerdConnection) {}

  /** Creates the task (its process exists, not yet started); returns its pid. */
  async create(containerId: string, opts: CreateTaskOptions, call?: ContainerdCallOptions): Promise<number> {
    let stdio = "";
    if (opts.logPath) {
      const abs = path.resolve(opts.logPath);
      fs.mkdirSync(path.dirname(abs), { recursive: true });
      stdio = `file://${abs}`;
    }
    const res = await this.conn.unary(
      Tasks.method.create,
      {
        containerId,
        rootfs: opts.rootfs.map((m) => ({ type: m.type, source: m.source, target: "", options: m.options })),
        stdin: "",
        stdout: stdio,
        stderr: stdio,
        terminal: false,
        ...(opts.runcOptions ? { options: runcOptionsAny(opts.runcOptions) } : {}),
      },
      call,
    );
    return res.pid;
  }

  async start(containerId: string, call?: ContainerdCallOptions): Promise<number> {
    const res = await this.conn.unary(Tasks.method.start, { containerId }, call);
    return res.pid;
  }

  /** Sends a signal to the task's init process, or with `all` to every process in it. */
  async kill(containerId: string, signal: NodeJS.Signals | number = "SIGTERM", opts: { all?: boolean } = {}, call?: ContainerdCallOptions): Promise<void> {
    await this.conn.unary(Tasks.method.kill, { containerId, signal: signalNumber(signal), all: opts.all ?? false }, call);
  }

  /**
   * Resolves when the task exits (immediately if it already has). Call it before
   * kill(), so the exit cannot be missed.
   */
  async wait(containerId: string, call?: ContainerdCallOptions): Promise<TaskExitStatus> {
    const res = await this.conn.unary(Tasks.method.wait, { containerId }, { timeoutMs: WAIT_TIMEOUT_MS, ...call });
    return { exitStatus: res.exitStatus, exitedAt: timestampToDate(res.exitedAt) };
  }

  /** Deletes a stopped task (its shim goes away); returns its exit status. */
  async delete(containerId: string, call?: ContainerdCallOptions): Promise<TaskExitStatus & { pid: number }> {
    const res = await this.conn.unary(Tasks.method.delete, { containerId }, call);
    return { pid: res.pid, exitStatus: res.exitStatus, exitedAt: timestampToDate(res.exitedAt) };
  }

  async get(containerId: string, call?: ContainerdCallOptions): Promise<TaskInfo> {
    const res = await this.conn.unary(Tasks.method.get, { containerId }, call);
    if (!res.process) throw new ContainerdError("unknown", `containerd returned no process for task ${containerId}`);
    return toTaskInfo(res.process);
  }

  /** The task's status, or undefined when the container has no task. */
  async status(containerId: string, call?: ContainerdCallOptions): Promise<TaskInfo | undefined> {
    try {
      return await this.get(containerId, call);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list(filter = "", call?: ContainerdCallOptions): Promise<TaskInfo[]> {
    const res = await this.conn.unary(Tasks.method.list, { filter }, call);
    return res.tasks.map(toTaskInfo);
  }

  async metrics(containerId: string, call?: ContainerdCallOptions): Promise<TaskMetrics> {
    const res = await this.conn.unary(Tasks.method.metrics, { filters: [`id==${containerId}`] }, call);
    const m = res.metrics[0];
    if (!m || !m.data) throw new ContainerdError("not_found", `no metrics for task ${containerId}`);
    return { id: m.id, timestamp: timestampToDate(m.timestamp), usage: decodeResourceUsage(m.data.typeUrl, m.data.value), typeUrl: m.data.typeUrl, value: m.data.value };
  }

  /**
   * Stops and deletes the task: Wait first, SIGTERM, SIGKILL to every process
   * after `graceMs`, then Delete. A container without a task is fine. Returns
   * the exit status, or undefined when there was no task.
   */
  async stop(containerId: string, graceMs = 10_000, call?: ContainerdCallOptions): Promise<TaskExitStatus | undefined> {
    const info = await this.status(containerId, call);
    if (!info) return undefined;
    let exit: TaskExitStatus | undefined;
    if (info.status !== "stopped") {
      const waiting = this.wait(containerId, call);
      // A failed wait is reported below; don't let it be unhandled meanwhile.
      waiting.catch(() => {});
      if (info.status === "created") {
        // Never started: nothing to shut down gracefully.
        await this.killIgnoringGone(containerId, "SIGKILL", true, call);
      } else {
        await this.killIgnoringGone(containerId, "SIGTERM", false, call);
        const timer = new AbortController();
        const first = await Promise.race([waiting, sleep(graceMs, "grace" as const, { signal: timer.signal }).catch(() => "aborted" as const)]);
        timer.abort();
        if (first === "grace") await this.killIgnoringGone(containerId, "SIGKILL", true, call);
      }
      exit = await waiting;
    }
    const deleted = await this.delete(containerId, call);
    return exit ?? { exitStatus: deleted.exitStatus, exitedAt: deleted.exitedAt };
  }

  private async killIgnoringGone(containerId: string, signal: NodeJS.Signals, all: boolean, call?: ContainerdCallOptions): Promise<void> {
    try {
      await this.kill(containerId, signal, { all }, call);
    } catch (err) {
      // The process exited between the status check and the signal.
      if (!isNotFound(err)) throw err;
    }
  }
}
