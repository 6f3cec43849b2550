// One async mutex per key (a bot). Every state change of a workspace runs under its
// key. The work itself never observes the caller's AbortSignal: when the caller goes
// away it stops *waiting*, the sequence runs to completion and releases the lock, so a
// half-swapped container is never left behind. A caller that waited longer than its
// timeout for the lock (another operation on the same bot is stuck) gets "unavailable"
// and its operation is dropped before it starts; other keys are never affected.
import { WorkspaceError } from "./errors.js";

export class LockAbortedError extends WorkspaceError {
  constructor(key: string) {
    super("cancelled", `stopped waiting for ${key}: the caller went away (the operation continues in the background)`);
    this.name = "LockAbortedError";
  }
}

export class LockTimeoutError extends WorkspaceError {
  constructor(key: string, timeoutMs: number) {
    super("unavailable", `${key} is busy: another operation on it has held it for more than ${timeoutMs} ms; this one was not started, try again later`, {
      reason: "lock_timeout",
    });
    this.name = "LockTimeoutError";
  }
}

export interface LockRunOptions {
  signal?: AbortSignal;
  /** Give up waiting for the lock after this long (the operation is then not run at all). */
  timeoutMs?: number;
  onOrphanError?: (err: unknown) => void;
}

export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  /** Keys whose current holder started running, with when it started. */
  private readonly holders = new Map<string, number>();

  /** Whether some operation holds or waits for `key`. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }

  /** How long the current holder of `key` has been running, or undefined when nobody holds it. */
  heldForMs(key: string): number | undefined {
    const since = this.holders.get(key);
    return since === undefined ? undefined : Date.now() - since;
  }

  /**
   * Runs `fn` once every earlier operation on `key` finished. If `signal` aborts,
   * the returned promise rejects with LockAbortedError, but `fn` (queued or
   * running) still runs to its end; its own failure is then only logged via
   * `onOrphanError`. If `timeoutMs` passes before `fn` could start, the promise
   * rejects with LockTimeoutError and `fn` never runs.
   */
  run<T>(key: string, fn: () => Promise<T>, opts: LockRunOptions = {}): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let gaveUp = false;
    let started = false;
    let timer: NodeJS.Timeout | undefined;
    const work = previous.then(async () => {
      if (timer) clearTimeout(timer);
      if (gaveUp) throw new LockTimeoutError(key, opts.timeoutMs ?? 0);
      started = true;
      this.holders.set(key, Date.now());
      try {
        return await fn();
      } finally {
        this.holders.delete(key);
      }
    });
    const tail = work.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    const signal = opts.signal;
    const timeoutMs = opts.timeoutMs;
    if (signal === undefined && timeoutMs === undefined) return work;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        f();
      };
      const onAbort = () =>
        settle(() => {
          work.catch((err: unknown) => {
            if (!(err instanceof LockTimeoutError)) opts.onOrphanError?.(err);
          });
          reject(new LockAbortedError(key));
        });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          // Still queued: drop the operation. Already running: keep waiting for it (the
          // timeout bounds the wait for the lock, not the operation).
          if (started) return;
          gaveUp = true;
          settle(() => {
            work.catch(() => undefined);
            reject(new LockTimeoutError(key, timeoutMs));
          });
        }, timeoutMs);
        timer.unref();
      }
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      work.then(
        (v) => settle(() => resolve(v)),
        (err: unknown) => settle(() => reject(err)),
      );
    });
  }
}
