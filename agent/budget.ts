// The agent's memory budget for file work: every buffer a request makes the
// agent hold (a file read, a response on its way out, a ReadRaw block) is
// leased from one ByteBudget first, so what the agent keeps in memory for
// callers is bounded whatever they send, and a request beyond the budget
// waits briefly in line or is refused with RESOURCE_EXHAUSTED.
import type { AgentContext } from "./context.js";
import { resourceExhausted, RpcError, Status } from "./errors.js";
import {
  FILE_BUDGET_BYTES,
  FILE_BUDGET_MAX_WAITERS,
  FILE_BUDGET_RESERVE_BYTES,
  FILE_BUDGET_SMALL_LEASE_BYTES,
  FILE_BUDGET_WAIT_MS,
  READ_RAW_BUDGET_BYTES,
  READ_RAW_WAIT_MS,
  RECEIVE_BUDGET_BYTES,
  RECEIVE_BUDGET_WAIT_MS,
} from "./limits.js";

export interface ByteBudgetOptions {
  /** Bytes leased at once, at most. */
  capacity: number;
  /**
   * Bytes only small leases (≤ smallMax) may use: large work queued or stalled
   * (unread streams) can never take the last of the budget from small reads.
   */
  reserve: number;
  /** A lease of at most this many bytes is small. */
  smallMax: number;
  /** How long a lease may wait in line before it is refused. */
  maxWaitMs: number;
  /** Leases waiting at once, at most; one more is refused at once. */
  maxWaiters: number;
  /** What the budget is for, in refusals ("file budget" when not set). */
  name?: string;
  /** What a refused caller can do, in refusals. */
  advice?: string;
}

/** Bytes held for one piece of work; release() returns them (once, whatever the number of calls). */
export interface Lease {
  readonly bytes: number;
  release(): void;
}

/** Waiting requests refused per turn of the event loop. */
const REFUSALS_PER_TURN = 16;

interface Waiter {
  bytes: number;
  grant: (lease: Lease) => void;
  fail: (err: Error) => void;
  timer: NodeJS.Timeout;
  done: boolean;
}

export class ByteBudget {
  private used = 0;
  private highest = 0;
  private readonly waiters: Waiter[] = [];
  private refusedCount = 0;

  constructor(readonly options: ByteBudgetOptions) {
    if (options.reserve >= options.capacity) throw new Error("the reserve must be smaller than the capacity");
  }

  /** Bytes leased now. */
  get inUse(): number {
    return this.used;
  }

  /** The most bytes leased at once so far. */
  get peak(): number {
    return this.highest;
  }

  /** Leases refused so far (queue full or waited too long). */
  get refused(): number {
    return this.refusedCount;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** The largest lease that can ever be granted. */
  get largestLease(): number {
    return this.options.capacity - this.options.reserve;
  }

  private limitFor(bytes: number): number {
    return bytes <= this.options.smallMax ? this.options.capacity : this.options.capacity - this.options.reserve;
  }

  private fits(bytes: number): boolean {
    return this.used + bytes <= this.limitFor(bytes);
  }

  private take(bytes: number): Lease {
    this.used += bytes;
    if (this.used > this.highest) this.highest = this.used;
    let released = false;
    return {
      bytes,
      release: () => {
        if (released) return;
        released = true;
        this.used -= bytes;
        this.grantWaiting();
      },
    };
  }

  /** Clamps a request to what one lease may hold (a larger one could never be granted). */
  private clamp(bytes: number): number {
    return Math.max(0, Math.min(Math.ceil(bytes), this.largestLease));
  }

  /** A lease at once, or undefined when the bytes are not free now (or others wait first). */
  tryAcquire(bytes: number): Lease | undefined {
    const n = this.clamp(bytes);
    const small = n <= this.options.smallMax;
    // A large lease never overtakes large ones already waiting.
    if (!small && this.waiters.some((w) => w.bytes > this.options.smallMax)) return undefined;
    return this.fits(n) ? this.take(n) : undefined;
  }

  /**
   * A lease of `bytes`, granted at once when they are free, else after the
   * leases before it in line. `what` names the work in the refusal. Rejects
   * with RESOURCE_EXHAUSTED when too many wait or none frees in time, and with
   * `signal`'s reason when it aborts first.
   */
  acquire(bytes: number, what: string, signal?: AbortSignal): Promise<Lease> {
    const now = this.tryAcquire(bytes);
    if (now) return Promise.resolve(now);
    const n = this.clamp(bytes);
    if (this.waiters.length >= this.options.maxWaiters) {
      this.refusedCount++;
      return Promise.reject(this.busy(what, n, `${this.waiters.length} requests already wait`));
    }
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<Lease>((resolve, reject) => {
      const onAbort = (): void => finish(() => reject(signal!.reason as Error));
      const finish = (settle: () => void): void => {
        if (waiter.done) return;
        waiter.done = true;
        clearTimeout(waiter.timer);
        signal?.removeEventListener("abort", onAbort);
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) this.waiters.splice(i, 1);
        settle();
        // A waiter that left may have blocked the line for smaller ones behind it.
        this.grantWaiting();
      };
      const waiter: Waiter = {
        bytes: n,
        done: false,
        grant: (lease) => finish(() => resolve(lease)),
        fail: (err) => finish(() => reject(err)),
        timer: setTimeout(() => {
          this.refuseSoon(() => {
            this.refusedCount++;
            waiter.fail(this.busy(what, n, `waited ${this.options.maxWaitMs} ms`));
          });
        }, this.options.maxWaitMs),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private readonly refusals: Array<() => void> = [];

  /**
   * Refusals run a few at a time, each batch in its own turn of the event loop:
   * hundreds of requests that queued together time out together, and refusing
   * them all in one go would hold up every other call (Info) meanwhile.
   */
  private refuseSoon(refuse: () => void): void {
    this.refusals.push(refuse);
    if (this.refusals.length === 1) setImmediate(() => this.refuseBatch());
  }

  private refuseBatch(): void {
    for (const refuse of this.refusals.splice(0, REFUSALS_PER_TURN)) refuse();
    if (this.refusals.length > 0) setImmediate(() => this.refuseBatch());
  }

  /** Grants waiting leases in order; small ones pass a large one that does not fit yet. */
  private grantWaiting(): void {
    let largeBlocked = false;
    for (const w of [...this.waiters]) {
      if (w.done) continue;
      const small = w.bytes <= this.options.smallMax;
      if (!small && largeBlocked) continue;
      if (this.fits(w.bytes)) {
        w.grant(this.take(w.bytes));
      } else if (!small) {
        largeBlocked = true;
      }
    }
  }

  private busy(what: string, bytes: number, why: string): Error {
    return resourceExhausted(
      `the agent is busy: ${what} needs ${bytes} bytes of its ${this.options.capacity}-byte ${this.options.name ?? "file budget"}, ` +
        `${this.used} are in use and ${why}; ${this.options.advice ?? "try again shortly or read a smaller part (ReadRaw with offset and length)"}`,
    );
  }
}

/** An AbortSignal that aborts (CANCELLED) when a grpc-js call is cancelled. */
export function callSignal(call: { cancelled: boolean; once(event: "cancelled", fn: () => void): unknown }): AbortSignal {
  const ac = new AbortController();
  const abort = (): void => ac.abort(new RpcError(Status.CANCELLED, "the call was cancelled"));
  if (call.cancelled) abort();
  else call.once("cancelled", abort);
  return ac.signal;
}

/**
 * Holds `lease` until the call has ended: grpc-js reports the end of every call,
 * cancelled or not, as 'cancelled' on the call object, once its last message has
 * been handed to HTTP/2 and its status sent (or the stream is gone). A response
 * a client does not read therefore stays inside the budget. Without a call (a
 * handler run in-process) the lease is returned at once.
 */
export function holdUntilCallEnds<T>(response: T, lease: Lease, call: { cancelled: boolean; once(event: "cancelled", fn: () => void): unknown } | undefined): T {
  if (!call || call.cancelled) lease.release();
  else call.once("cancelled", () => lease.release());
  return response;
}

export const defaultBudgetOptions: ByteBudgetOptions = {
  capacity: FILE_BUDGET_BYTES,
  reserve: FILE_BUDGET_RESERVE_BYTES,
  smallMax: FILE_BUDGET_SMALL_LEASE_BYTES,
  maxWaitMs: FILE_BUDGET_WAIT_MS,
  maxWaiters: FILE_BUDGET_MAX_WAITERS,
};

/**
 * ReadRaw streams lease from a budget of their own: a stream holds its share
 * for as long as its client takes to read it, and streams that stall must not
 * starve ReadFile (nor the other way round).
 */
export const defaultStreamBudgetOptions: ByteBudgetOptions = {
  capacity: READ_RAW_BUDGET_BYTES,
  reserve: 0,
  smallMax: 0,
  maxWaitMs: READ_RAW_WAIT_MS,
  maxWaiters: FILE_BUDGET_MAX_WAITERS,
};

/** Request messages being received (grpc/receive-budget.ts). */
export const defaultReceiveBudgetOptions: ByteBudgetOptions = {
  capacity: RECEIVE_BUDGET_BYTES,
  reserve: 0,
  smallMax: 0,
  maxWaitMs: RECEIVE_BUDGET_WAIT_MS,
  maxWaiters: FILE_BUDGET_MAX_WAITERS,
  name: "budget for request messages",
  advice: "try again shortly, or send large contents in parts (WriteRaw)",
};

interface Budgets {
  file: ByteBudget;
  stream: ByteBudget;
}

const budgets = new WeakMap<AgentContext, Budgets>();

function budgetsOf(ctx: AgentContext): Budgets {
  let b = budgets.get(ctx);
  if (!b) {
    b = { file: new ByteBudget(defaultBudgetOptions), stream: new ByteBudget(defaultStreamBudgetOptions) };
    budgets.set(ctx, b);
  }
  return b;
}

/** The budget of one agent's ReadFiles (made with the defaults on first use unless setBudgets came first). */
export function fileBudget(ctx: AgentContext): ByteBudget {
  return budgetsOf(ctx).file;
}

/** The budget of one agent's ReadRaw streams. */
export function streamBudget(ctx: AgentContext): ByteBudget {
  return budgetsOf(ctx).stream;
}

export function setBudgets(ctx: AgentContext, file: ByteBudget, stream: ByteBudget): void {
  budgets.set(ctx, { file, stream });
}
