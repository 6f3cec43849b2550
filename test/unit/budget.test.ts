// ByteBudget (agent/budget.ts): pure logic, no agent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ByteBudget } from "../../agent/budget.js";
import { Status, rpcCode } from "../../proto/rpc.js";

const opts = { capacity: 100, reserve: 20, smallMax: 10, maxWaitMs: 200, maxWaiters: 3 };

test("leases are granted while they fit; a large one waits its turn and gets the bytes once they are released", async () => {
  const b = new ByteBudget(opts);
  const a = await b.acquire(50, "a");
  const c = await b.acquire(30, "c");
  assert.equal(b.inUse, 80);
  let granted = false;
  const waiting = b.acquire(40, "d").then((l) => {
    granted = true;
    return l;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(granted, false);
  assert.equal(b.waiting, 1);
  a.release();
  a.release(); // twice is once
  const d = await waiting;
  assert.equal(b.inUse, 70);
  c.release();
  d.release();
  assert.equal(b.inUse, 0);
  assert.equal(b.peak, 80);
});

test("the reserve is for small leases: large ones stop short of it, small ones pass large ones waiting", async () => {
  const b = new ByteBudget(opts);
  const big = await b.acquire(75, "big");
  assert.equal(b.tryAcquire(11), undefined, "a large lease may not dig into the reserve (75 + 11 > 100 - 20)");
  const small = b.tryAcquire(10);
  assert.ok(small, "a small lease uses the reserve");
  const largeWait = b.acquire(20, "large");
  const smallWhileLargeWaits = await b.acquire(5, "small");
  assert.ok(smallWhileLargeWaits, "a small lease is not held up by a large one waiting");
  big.release();
  const large = await largeWait;
  assert.equal(large.bytes, 20);
  for (const l of [small, smallWhileLargeWaits, large]) l.release();
  assert.equal(b.inUse, 0);
});

test("a lease that waits too long, or finds the line full, is refused with RESOURCE_EXHAUSTED naming the work", async () => {
  const b = new ByteBudget(opts);
  const all = await b.acquire(80, "all");
  const t0 = Date.now();
  await assert.rejects(b.acquire(50, "ReadFile of /data/x"), (err) => {
    assert.equal(rpcCode(err), Status.RESOURCE_EXHAUSTED);
    assert.match((err as Error).message, /ReadFile of \/data\/x needs 50 bytes/);
    return true;
  });
  assert.ok(Date.now() - t0 >= opts.maxWaitMs - 5);
  const queued = [b.acquire(50, "1"), b.acquire(50, "2"), b.acquire(50, "3")];
  for (const q of queued) q.catch(() => undefined);
  await assert.rejects(b.acquire(50, "4"), /3 requests already wait/);
  assert.equal(b.refused, 2);
  all.release();
  const first = await queued[0]!;
  first.release();
  await Promise.allSettled(queued);
  assert.equal(b.waiting, 0);
});

test("an aborted wait leaves the line and lets the ones behind it through", async () => {
  const b = new ByteBudget(opts);
  const held = await b.acquire(60, "held");
  const ac = new AbortController();
  const first = b.acquire(50, "first", ac.signal);
  const second = b.acquire(10, "second"); // small: fits at once
  assert.equal((await second).bytes, 10);
  ac.abort(new Error("cancelled"));
  await assert.rejects(first, /cancelled/);
  assert.equal(b.waiting, 0);
  held.release();
  assert.equal(b.inUse, 10);
});

test("a request larger than any lease is clamped to the largest lease instead of waiting forever", async () => {
  const b = new ByteBudget(opts);
  const l = await b.acquire(1000, "huge");
  assert.equal(l.bytes, b.largestLease);
  l.release();
});
