// Tasks: the running process of a container (runc via the io.containerd.runc.v2 shim).
//
// Output: stdout and stderr are given to Tasks.Create as the same `file://<path>`
// URI; the runc v2 shim then opens <path> for append and copies both streams into
// it (a plain path would be taken for a FIFO, `binary://` runs a logging binary).
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";
import fs from "node:fs";
import { create } from "@bufbuild/protobuf";
import { AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { Tasks } from "../../proto/gen/containerd/services/tasks/v1/tasks_pb.js";
import { Status, type Process } from "../../proto/gen/containerd/types/task/task_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isNotFound } from "./errors.js";
import { runcOptionsAny, type RuncOptions } from "./containers.js";
import { timestampToDate, type MountSpec } from "./snapshots.js";
import { decodeResourceUsage, type ResourceUsage } from "./metrics.js";
import type { LinuxResources } from "./spec.js";

/** The type URL containerd's own client gives the LinuxResources of Tasks.Update (the value is its JSON). */
export const LINUX_RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/** The JSON of `resources` in an Any, as the runc shim reads it for `runc update`. */
export function linuxResourcesAny(resources: LinuxResources): Any {
  return create(AnySchema, { typeUrl: LINUX_RESOURCES_TYPE_URL, value: new TextEncoder().encode(JSON.stringify(resources)) });
}

function checkUpdateResources(containerId: string, r: LinuxResources): void {
  const fail = (what: string) => {
    throw new ContainerdError("invalid_argument", `update of task ${containerId}: ${what}`);
  };
  if (!r.memory && !r.cpu && !r.pids && !r.devices) fail("no resources given");
  // -1 is the OCI spelling of "no limit"; 0 leaves a value as it is.
  const limitOk = (v: number | undefined) => v === undefined || (Number.isSafeInteger(v) && v >= -1);
  const countOk = (v: number | undefined) => v === undefined || (Number.isSafeInteger(v) && v >= 0);
  if (r.memory && !(limitOk(r.memory.limit) && limitOk(r.memory.swap) && limitOk(r.memory.reservation))) fail(`bad memory ${JSON.stringify(r.memory)}`);
  if (r.cpu && !(limitOk(r.cpu.quota) && countOk(r.cpu.period) && countOk(r.cpu.shares))) fail(`bad cpu ${JSON.stringify(r.cpu)}`);
  if (r.pids && !limitOk(r.pids.limit)) fail(`bad pids ${JSON.stringify(r.pids)}`);
}

export interface StopTaskOptions {
  /** How long SIGTERM gets before SIGKILL (default 10 s). */
  graceMs?: number;
  /**
   * How long the exit may take after SIGKILL (default 10 s). A task in a frozen
   * cgroup, or with a process stuck in uninterruptible sleep, does not die; stop()
   * then fails with "deadline_exceeded" and leaves the task in place.
   */
  killTimeoutMs?: number;
}

export const DEFAULT_STOP_GRACE_MS = 10_000;
export const DEFAULT_KILL_TIMEOUT_MS = 10_000;

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

  /**
   * Changes the limits of a running task (runc update): e.g.
   * `update(id, linuxResources({ memoryBytes, pids }))`. Fields left out keep
   * their value. The container's spec stays as it was: a new task gets the
   * spec's limits again unless the spec is updated too.
   */
  async update(containerId: string, resources: LinuxResources, call?: ContainerdCallOptions): Promise<void> {
    checkUpdateResources(containerId, resources);
    await this.conn.unary(Tasks.method.update, { containerId, resources: linuxResourcesAny(resources) }, call);
  }

  async metrics(containerId: string, call?: ContainerdCallOptions): Promise<TaskMetrics> {
    const res = await this.conn.unary(Tasks.method.metrics, { filters: [`id==${containerId}`] }, call);
    const m = res.metrics[0];
    if (!m || !m.data) throw new ContainerdError("not_found", `no metrics for task ${containerId}`);
    return { id: m.id, timestamp: timestampToDate(m.timestamp), usage: decodeResourceUsage(m.data.typeUrl, m.data.value), typeUrl: m.data.typeUrl, value: m.data.value };
  }

  /**
   * Stops and deletes the task: Wait first, SIGTERM, SIGKILL to every process
   * after the grace period, then Delete. A container without a task is fine.
   * Returns the exit status, or undefined when there was no task. `opts` is the
   * grace period in ms, or StopTaskOptions; a task that has not exited
   * `killTimeoutMs` after SIGKILL fails the call with "deadline_exceeded".
   */
  async stop(containerId: string, opts: number | StopTaskOptions = {}, call?: ContainerdCallOptions): Promise<TaskExitStatus | undefined> {
    const { graceMs = DEFAULT_STOP_GRACE_MS, killTimeoutMs = DEFAULT_KILL_TIMEOUT_MS } = typeof opts === "number" ? { graceMs: opts } : opts;
    for (const [name, v] of [["graceMs", graceMs], ["killTimeoutMs", killTimeoutMs]] as const) {
      if (!(Number.isFinite(v) && v >= 0)) throw new ContainerdError("invalid_argument", `stop of task ${containerId}: ${name} must be a number of milliseconds >= 0, got ${v}`);
    }
    const info = await this.status(containerId, call);
    if (!info) return undefined;
    let exit: TaskExitStatus | undefined;
    if (info.status !== "stopped") {
      const waitAbort = new AbortController();
      const waiting = this.wait(containerId, { ...call, signal: call?.signal ? AbortSignal.any([call.signal, waitAbort.signal]) : waitAbort.signal });
      // A failed wait is reported below; don't let it be unhandled meanwhile.
      waiting.catch(() => {});
      try {
        if (info.status === "created") {
          // Never started: nothing to shut down gracefully.
          await this.killIgnoringGone(containerId, "SIGKILL", true, call);
        } else {
          await this.killIgnoringGone(containerId, "SIGTERM", false, call);
          if ((await raceTimeout(waiting, graceMs)) === "timeout") await this.killIgnoringGone(containerId, "SIGKILL", true, call);
        }
        if ((await raceTimeout(waiting, killTimeoutMs)) === "timeout") {
          throw new ContainerdError(
            "deadline_exceeded",
            `task ${containerId} did not exit within ${killTimeoutMs} ms after SIGKILL (status ${(await this.status(containerId, call).catch(() => undefined))?.status ?? "unknown"}): ` +
              "a frozen cgroup or a process in uninterruptible sleep (D state, e.g. a hung NFS or FUSE mount) cannot die; the task was left in place",
          );
        }
      } finally {
        waitAbort.abort();
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

/** Resolves "timeout" when `promise` has not settled within `ms`; its rejection passes through. */
async function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  const timer = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, "timeout" as const, { signal: timer.signal })]);
  } finally {
    timer.abort();
  }
}
