// WorkspaceSupervisor: restarts a workspace whose task exits on its own (the agent
// crashed, everything in the container was killed), without waiting for the next tool
// call, and one whose agent stops answering (probed with Info at an interval; calls to
// a hung agent time out instead of failing, so nothing else would notice). It also
// records OOM kills on the workspace's row. It follows containerd's TaskExit and
// TaskOOM events on one stream; when the
// event stream breaks (containerd restarted) it subscribes again with backoff and
// reports it, so the caller can reconcile what it missed meanwhile. A workspace that
// keeps exiting is marked "error" instead of being restarted forever.
import { setTimeout as sleep } from "node:timers/promises";
import { subscribeTaskEvents, type Subscription, type TaskEvent, type TaskExitEvent } from "../containerd/events.js";
import type { ContainerdConnection } from "../containerd/connection.js";
import { daemonVersion } from "../containerd/version.js";
import { describeError } from "./errors.js";
import type { WorkspaceManager } from "./manager.js";

export interface SupervisorOptions {
  /** Restarts of one workspace allowed within `windowMs` before it counts as crash-looping (default 5). */
  maxRestarts?: number;
  /** Default 60 s. */
  windowMs?: number;
  /** Pause before a restart; doubles with each restart in the window (default 500 ms, at most 30 s). */
  restartDelayMs?: number;
  /** First pause before subscribing again after the stream failed (default 500 ms, doubling to 30 s). */
  resubscribeDelayMs?: number;
  /** Liveness probes of running workspaces: interval (default 30 s; 0 turns them off). */
  probeIntervalMs?: number;
  /** How long a probe waits for Info (default 5 s). */
  probeTimeoutMs?: number;
  /** Consecutive failed probes before a restart (default 2). */
  probeFailures?: number;
  /** Called after a resubscription that followed a broken stream: exits may have been missed. */
  onResubscribed?: () => void;
  /** What the supervisor did, for the operator's log. */
  onEvent?: (event: SupervisorEvent) => void;
}

export type SupervisorEvent =
  | { type: "restarted"; containerId: string; exitStatus: number }
  | { type: "crash_loop"; containerId: string; exits: number; windowMs: number }
  | { type: "restart_failed"; containerId: string; error: string }
  | { type: "unresponsive_restarted"; botId: string; failedProbes: number }
  | { type: "probe_failed"; botId: string; error: string }
  | { type: "missed_exit"; containerId: string }
  | { type: "oom"; containerId: string }
  | { type: "oom_not_recorded"; containerId: string; error: string }
  | { type: "stream_lost"; error: string }
  | { type: "resubscribed" };

const MAX_DELAY_MS = 30_000;

export class WorkspaceSupervisor {
  private readonly maxRestarts: number;
  private readonly windowMs: number;
  private readonly restartDelayMs: number;
  private readonly resubscribeDelayMs: number;
  /** Restart times per container, within the window. */
  private readonly restarts = new Map<string, number[]>();
  /**
   * Containers with a restart pending or running: one at a time each. An exit that
   * arrives meanwhile is not dropped: it marks the entry, and once the restart is done
   * the container is looked at again (the new task may be the one that exited).
   */
  private readonly pending = new Map<string, { again: boolean; exit: TaskExitEvent }>();
  private readonly inFlight = new Set<Promise<void>>();
  private sub: Subscription<TaskEvent> | undefined;
  private watchdog: Promise<void> | undefined;
  /** Consecutive failed probes per bot. */
  private readonly failedProbes = new Map<string, number>();
  private closed = false;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private markReady: () => void = () => undefined;
  /** Settles once the first subscription is open. */
  readonly ready: Promise<void> = new Promise((resolve) => (this.markReady = resolve));

  constructor(
    private readonly manager: WorkspaceManager,
    private readonly conn: ContainerdConnection,
    private readonly options: SupervisorOptions = {},
  ) {
    this.maxRestarts = options.maxRestarts ?? 5;
    this.windowMs = options.windowMs ?? 60_000;
    this.restartDelayMs = options.restartDelayMs ?? 500;
    this.resubscribeDelayMs = options.resubscribeDelayMs ?? 500;
  }

  /** Subscribes and starts following exits (in the background until close()). */
  start(): void {
    if (this.loop) return;
    this.loop = this.run();
    if ((this.options.probeIntervalMs ?? 30_000) > 0) this.watchdog = this.watch();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    this.sub?.close();
    await this.loop;
    await this.watchdog;
    await Promise.allSettled([...this.inFlight]);
  }

  /** Probes every workspace that should be running; restarts one that failed enough probes in a row. */
  private async watch(): Promise<void> {
    const interval = this.options.probeIntervalMs ?? 30_000;
    const timeout = this.options.probeTimeoutMs ?? 5_000;
    const limit = this.options.probeFailures ?? 2;
    while (!this.closed) {
      try {
        await sleep(interval, undefined, { signal: this.abort.signal });
      } catch {
        return;
      }
      let bots: string[];
      try {
        // An exit the event stream did not deliver: the row says running, the task is gone.
        for (const containerId of await this.manager.deadButMeantToRun()) {
          if (!this.pending.has(containerId)) this.options.onEvent?.({ type: "missed_exit", containerId });
          this.onExit({ containerId, id: containerId, pid: 0, exitStatus: -1, exitedAt: undefined, namespace: "" });
        }
        bots = await this.manager.botsMeantToRun();
      } catch {
        continue; // containerd or the store is away; the event stream reports that
      }
      for (const id of this.failedProbes.keys()) if (!bots.includes(id)) this.failedProbes.delete(id);
      for (const botId of bots) {
        if (this.closed) return;
        // probe() skips a workspace whose task is not running or that is mid-change.
        const result = await this.manager.probe(botId, timeout).catch(() => "skipped" as const);
        if (result !== "unresponsive") {
          if (result === "ok") this.failedProbes.delete(botId);
          continue;
        }
        const failed = (this.failedProbes.get(botId) ?? 0) + 1;
        this.failedProbes.set(botId, failed);
        if (failed < limit) continue;
        this.failedProbes.delete(botId);
        try {
          if ((await this.manager.restartUnresponsive(botId, timeout)) === "restarted") {
            this.options.onEvent?.({ type: "unresponsive_restarted", botId, failedProbes: failed });
          }
        } catch (err) {
          if (!this.closed) this.options.onEvent?.({ type: "probe_failed", botId, error: describeError(err) });
        }
      }
    }
  }

  private async run(): Promise<void> {
    let delay = this.resubscribeDelayMs;
    let broken = false;
    while (!this.closed) {
      const sub = subscribeTaskEvents(this.conn);
      this.sub = sub;
      try {
        // The stream says nothing until an event comes; a call on the same connection
        // answering means containerd is there and the subscription went out.
        await daemonVersion(this.conn);
        this.markReady();
        if (broken) {
          this.options.onEvent?.({ type: "resubscribed" });
          this.options.onResubscribed?.();
          broken = false;
          delay = this.resubscribeDelayMs;
        }
        for await (const event of sub) {
          delay = this.resubscribeDelayMs;
          if (event.type === "oom") {
            this.onOom(event.oom.containerId);
            continue;
          }
          const exit = event.exit;
          if (exit.id !== exit.containerId) continue; // an exec'd process, not the task's init
          this.onExit(exit);
        }
        if (this.closed) return;
        this.options.onEvent?.({ type: "stream_lost", error: "the event stream ended" });
      } catch (err) {
        if (this.closed) return;
        this.options.onEvent?.({ type: "stream_lost", error: describeError(err) });
      } finally {
        sub.close();
      }
      broken = true;
      try {
        await sleep(delay, undefined, { signal: this.abort.signal });
      } catch {
        return;
      }
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  /** The OOM killer struck inside a workspace: recorded on its row (the count survives restarts). */
  private onOom(containerId: string): void {
    const work = this.manager.recordOom(containerId).then(
      (recorded) => {
        if (recorded) this.options.onEvent?.({ type: "oom", containerId });
      },
      (err: unknown) => {
        if (!this.closed) this.options.onEvent?.({ type: "oom_not_recorded", containerId, error: describeError(err) });
      },
    );
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  private onExit(exit: TaskExitEvent): void {
    const id = exit.containerId;
    const pending = this.pending.get(id);
    if (pending) {
      pending.again = true;
      pending.exit = exit;
      return;
    }
    const state = { again: false, exit };
    this.pending.set(id, state);
    const work = (async () => {
      try {
        do {
          state.again = false;
          if (!(await this.handleExit(id, state.exit))) break;
        } while (state.again && !this.closed);
      } finally {
        this.pending.delete(id);
      }
    })();
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  /** One exit: restart (with a growing pause) or give up on a crash loop. False when the container is given up. */
  private async handleExit(id: string, exit: TaskExitEvent): Promise<boolean> {
    const now = Date.now();
    const recent = (this.restarts.get(id) ?? []).filter((t) => now - t < this.windowMs);
    this.restarts.set(id, recent);
    if (recent.length >= this.maxRestarts) {
      try {
        await this.manager.markFailed(id, "crash_loop", { exits: recent.length + 1, windowMs: this.windowMs, exitStatus: exit.exitStatus });
        this.options.onEvent?.({ type: "crash_loop", containerId: id, exits: recent.length + 1, windowMs: this.windowMs });
      } catch (err) {
        if (!this.closed) this.options.onEvent?.({ type: "restart_failed", containerId: id, error: `cannot mark the crash loop: ${describeError(err)}` });
      }
      return false;
    }
    try {
      const pause = Math.min(this.restartDelayMs * 2 ** recent.length, MAX_DELAY_MS);
      await sleep(pause, undefined, { signal: this.abort.signal });
    } catch {
      return false; // closed meanwhile
    }
    try {
      const done = await this.manager.restartAfterExit(id, exit);
      if (done === "restarted") {
        recent.push(Date.now());
        this.options.onEvent?.({ type: "restarted", containerId: id, exitStatus: exit.exitStatus });
      }
      return true;
    } catch (err) {
      // A failed attempt counts toward the crash-loop limit like a successful one.
      recent.push(Date.now());
      if (this.closed) return false;
      this.options.onEvent?.({ type: "restart_failed", containerId: id, error: describeError(err) });
      return true;
    }
  }
}
