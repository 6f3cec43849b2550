// Starting a workspace's task, in the order that never leaves it "running but
// unreachable": create the task (pid known, its netns exists) → CNI ADD on
// /proc/<pid>/ns/net → Tasks.Start → wait (bounded) until the agent answers Info and
// speaks the bundle's protocol version. Any failure after the task exists removes the
// task and its network again, marks the row "error" and returns the error; so does a task
// the OCI runtime refuses to create (a "conflict" in runc's words).
// Callers hold the bot's lock.
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { BridgeClient } from "../bridge/client.js";
import { checkWorkspace, openBridgeClient } from "../bridge/pool.js";
import { ContainerdError } from "../containerd/errors.js";
import { isLegacyContainerId } from "./botid.js";
import { targetAddress } from "./bridge-source.js";
import type { WorkspaceContext } from "./context.js";
import { WorkspaceError, describeError } from "./errors.js";
import { unrepairedSwap } from "../data/workspace-fs.js";
import { refreshStoredSandbox } from "./refresh-spec.js";
import { mountSocketDir } from "./socket-dir.js";

export interface StartOptions {
  /**
   * Mark the row "error" when the start fails (default). The supervisor's restarts keep
   * the row "running" instead: the workspace still should run, and the supervisor retries
   * until its crash-loop limit marks it failed.
   */
  markErrorOnFailure?: boolean;
}

export async function startTask(ctx: WorkspaceContext, botId: string, containerId: string, opts: StartOptions = {}): Promise<void> {
  const fail = async (stage: string, err: unknown) => {
    if (opts.markErrorOnFailure === false) await ctx.store.recordEvent(containerId, "start_failed", { stage, error: describeError(err) });
    else await ctx.setStatus(containerId, "error", "start_failed", { stage, error: describeError(err) });
  };
  // A task on a half-swapped /data would make the swap unrepairable (the workspace may
  // recreate a name the swap moved aside): whoever starts it repairs first (repair.ts).
  const swap = unrepairedSwap(ctx, botId);
  if (swap !== undefined) {
    throw new WorkspaceError("conflict", `workspace ${containerId} is not started: an ${swap.op} of its /data started ${swap.startedAt} was cut short and is not repaired yet`, {
      reason: "data_op_unrepaired",
    });
  }
  const existing = await ctx.cd.tasks.status(containerId);
  if (existing?.status === "running") {
    // Already running: make sure it is reachable (network and bridge) and say so.
    await ensureNetworkOfRunning(ctx, botId, containerId, existing.pid);
    await waitForBridgeOrFail(ctx, botId, containerId);
    const row = await ctx.store.getContainer(containerId);
    if (row?.status !== "running") await ctx.setStatus(containerId, "running", "running", { pid: existing.pid, adopted: true });
    return;
  }
  if (existing !== undefined) {
    // A stopped (or never started) task of an earlier run: clear it and its network.
    await ctx.cd.tasks.stop(containerId, 0);
  }
  await ctx.removeNetwork(botId, containerId);
  ctx.bridges.evict(botId);
  fs.rmSync(path.join(ctx.socketDir(botId), "bridge.sock"), { force: true });
  if (!isLegacyContainerId(containerId)) {
    // A tmpfs of its own: what the workspace writes there cannot fill the data root (socket-dir.ts).
    await mountSocketDir(ctx.socketDir(botId), (m) => ctx.log(m));
  }

  // A workspace created by an earlier version gets this version's sandbox (refresh-spec.ts).
  try {
    await refreshStoredSandbox(ctx, containerId);
  } catch (err) {
    ctx.log(`${containerId}: its stored spec was not brought up to this version's sandbox: ${describeError(err)}`);
  }

  let pid: number;
  try {
    pid = await ctx.cd.createTask(containerId, { logPath: ctx.logPath(containerId) });
  } catch (err) {
    // Only the runtime's refusal is a state of the workspace; anything else (containerd
    // unavailable…) leaves the row as it was, for a later start or reconcile.
    const refused = refusedByRuntime(containerId, err);
    if (refused === undefined) throw err;
    await fail("create", err);
    throw refused;
  }
  let ip: string | undefined;
  try {
    const attachment = await ctx.network.setupNetwork(containerId, `/proc/${pid}/ns/net`);
    ip = attachment.ip;
  } catch (err) {
    await undoTask(ctx, botId, containerId, "network setup failed");
    await fail("network", err);
    throw new WorkspaceError("unavailable", `workspace ${containerId} not started: ${describeError(err)}`, { cause: err, reason: "network" });
  }
  try {
    await ctx.cd.tasks.start(containerId);
  } catch (err) {
    await undoTask(ctx, botId, containerId, "Tasks.Start failed");
    await fail("start", err);
    throw err;
  }
  await ctx.setRoute(botId, containerId, ip);
  ctx.bridges.evict(botId);
  try {
    await waitForBridge(ctx, botId, containerId);
  } catch (err) {
    await undoTask(ctx, botId, containerId, "the bridge did not answer");
    await fail("bridge", err);
    throw err;
  }
  await ctx.setStatus(containerId, "running", "started", { pid, ip: ip ?? null, legacy: isLegacyContainerId(containerId) });
}

/**
 * runc refusing to create the task ("OCI runtime create failed") is about what the task
 * would run in: the workspace's root filesystem (its /etc/passwd made a directory, say)
 * or its spec. containerd answers UNKNOWN; the caller can act on it (roll back to a
 * version, delete), so it leaves as "conflict" in runc's words rather than as an
 * internal error whose message a client never sees.
 */
function refusedByRuntime(containerId: string, err: unknown): WorkspaceError | undefined {
  if (!(err instanceof ContainerdError)) return undefined;
  const m = /OCI runtime create failed: (.*?)(?:: unknown(?::|$)|$)/.exec(err.message);
  if (!m) return undefined;
  return new WorkspaceError("conflict", `workspace ${containerId} cannot start: the OCI runtime refused its task: ${m[1]}`, { cause: err, reason: "runtime" });
}

/** Kills and deletes the task, removes its network and the bot's route; failures are logged (the original error is what the caller gets). */
export async function undoTask(ctx: WorkspaceContext, botId: string, containerId: string, why: string): Promise<void> {
  await ctx.cd.tasks.stop(containerId, 0).catch((e: unknown) => ctx.log(`${containerId}: removing the task after "${why}": ${describeError(e)}`));
  await ctx.removeNetwork(botId, containerId).catch((e: unknown) => ctx.log(`${containerId}: removing the network after "${why}": ${describeError(e)}`));
}

/** The agent of a task that is already running must answer; otherwise the row says "error". */
export async function waitForBridgeOrFail(ctx: WorkspaceContext, botId: string, containerId: string): Promise<void> {
  try {
    await waitForBridge(ctx, botId, containerId);
  } catch (err) {
    await ctx.setStatus(containerId, "error", "start_failed", { stage: "bridge", error: describeError(err) });
    throw err;
  }
}

/** Bounded wait until the bridge answers Info; then the protocol version must match the bundle's. */
async function waitForBridge(ctx: WorkspaceContext, botId: string, containerId: string): Promise<void> {
  const timeoutMs = ctx.options.readyTimeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  const target = await ctx.bridgeTarget(botId);
  let last: unknown;
  while (Date.now() < deadline) {
    if (target.kind === "unix" && !fs.existsSync(target.socketPath)) {
      await sleep(20);
      continue;
    }
    // A fresh channel per probe: grpc-js backs off reconnecting a channel that failed.
    // The socket is pinned (never a link) and the agent must name this container.
    let probe: BridgeClient;
    try {
      probe = openBridgeClient(target, { channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
    } catch (err) {
      last = err;
      await sleep(50);
      continue;
    }
    try {
      const info = await checkWorkspace(probe, target, Math.max(200, Math.min(3_000, deadline - Date.now())));
      const expected = ctx.readContract().protocolVersion;
      if (info.protocolVersion !== expected) {
        throw new WorkspaceError("internal", `agent of ${containerId} speaks protocol ${info.protocolVersion}, the runtime bundle's contract says ${expected}`, {
          reason: "protocol_mismatch",
        });
      }
      return;
    } catch (err) {
      if (err instanceof WorkspaceError) throw err;
      last = err;
      await sleep(50);
    } finally {
      probe.close();
    }
  }
  throw new WorkspaceError("unavailable", `bridge of ${containerId} (${targetAddress(target)}) did not answer within ${timeoutMs} ms${last ? `: ${describeError(last)}` : ""}`, {
    cause: last,
    reason: "not_ready",
  });
}

/** One Info probe with a short deadline (a fresh channel, no reconnect backoff). */
export async function probeBridgeWithin(ctx: WorkspaceContext, botId: string, ms: number): Promise<void> {
  const target = await ctx.bridgeTarget(botId);
  const probe = openBridgeClient(target, { channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
  try {
    await checkWorkspace(probe, target, ms);
  } finally {
    probe.close();
  }
}

/** CHECK the attachment of a running task; when it fails, set it up again. Legacy IPs are re-learned. */
export async function ensureNetworkOfRunning(ctx: WorkspaceContext, botId: string, containerId: string, pid: number): Promise<"ok" | "renetworked"> {
  const netns = `/proc/${pid}/ns/net`;
  let outcome: "ok" | "renetworked" = "ok";
  let ip = ctx.network.cachedAttachment(containerId)?.ip;
  try {
    if (ip === undefined) throw new Error("no cached attachment");
    await ctx.network.checkNetwork(containerId, netns);
  } catch (err) {
    ctx.log(`${containerId}: network check failed (${describeError(err)}); setting it up again`);
    try {
      ip = (await ctx.network.setupNetwork(containerId, netns)).ip;
    } catch (setupErr) {
      await ctx.setStatus(containerId, "error", "network_failed", { error: describeError(setupErr) });
      throw new WorkspaceError("unavailable", `workspace ${containerId} runs but its network cannot be set up: ${describeError(setupErr)}`, {
        cause: setupErr,
        reason: "network",
      });
    }
    outcome = "renetworked";
  }
  const before = ctx.routes.get(botId);
  await ctx.setRoute(botId, containerId, ip);
  const after = ctx.routes.get(botId);
  if (before && after && targetAddress(before) !== targetAddress(after)) ctx.bridges.evict(botId);
  return outcome;
}
