// One async mutex per key (a container id). Every state change of a workspace runs
// under its key. The work itself never observes the caller's AbortSignal: when the
// caller goes away it stops *waiting*, the sequence runs to completion and releases
// the lock, so a half-swapped container is never left behind.

export class LockAbortedError extends Error {
  readonly code = "cancelled" as const;
  constructor(key: string) {
    super(`stopped waiting for ${key}: the caller went away (the operation continues in the background)`);
    this.name = "LockAbortedError";
  }
}

export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Whether some operation holds or waits for `key`. */
  isBusy(key: string): boolean {
    return this.tails.has(key);
  }

  /**
   * Runs `fn` once every earlier operation on `key` finished. If `signal` aborts,
   * the returned promise rejects with LockAbortedError, but `fn` (queued or
   * running) still runs to its end; its own failure is then only logged via `onOrphanError`.
   */
  run<T>(key: string, fn: () => Promise<T>, opts: { signal?: AbortSignal; onOrphanError?: (err: unknown) => void } = {}): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const work = previous.then(fn);
    const tail = work.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    const signal = opts.signal;
    if (signal === undefined) return work;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const onAbort = () => {
        if (settled) return;
        settled = true;
        work.catch((err: unknown) => opts.onOrphanError?.(err));
        reject(new LockAbortedError(key));
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      work.then(
        (v) => {
          signal.removeEventListener("abort", onAbort);
          if (!settled) {
            settled = true;
            resolve(v);
          }
        },
        (err: unknown) => {
          signal.removeEventListener("abort", onAbort);
          if (!settled) {
            settled = true;
            reject(err);
          }
        },
      );
    });
  }
}
