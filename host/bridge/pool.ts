// One BridgeClient per bot, reused across calls. The manager says where a
// bot's agent listens (resolveTarget); the pool keeps the channel healthy:
// a channel that broke, whose socket is gone or replaced, or that hangs in
// CONNECTING is dropped and the next call builds a fresh one.
//
// Every new connection is checked before any caller's call goes out on it:
// - a unix target is dialled through its pinned socket (socket.ts), never by
//   path: a link the workspace's root put at bridge.sock is refused, and
//   reconnects reach the same socket inode, hence the same agent;
// - with target.workspaceId set, the agent must answer Info with that
//   workspace's identity, or the entry is dropped with UNAVAILABLE.
// A unix channel that merely went IDLE stays while its path still names the
// pinned socket (the next call reconnects it to the same agent). A TCP channel
// that leaves READY is dropped at once: the IP may meanwhile belong to another
// workspace, and only a fresh entry's Info check may talk to it.
//
// One file because it is one state machine per entry (building, checking, watching,
// dropping) whose steps share the entry and its timers; the dialling itself is in
// target.ts and socket.ts, the calls in client.ts.
//
// The targets and the checked dial are in target.ts; what stays is the one class
// whose entries (build, check, watch, evict) share their state.
import * as grpc from "@grpc/grpc-js";
import { MAX_MESSAGE_BYTES } from "../../proto/constants.js";
import { RpcError, Status, rpcCode } from "../../proto/rpc.js";
import { BridgeClient } from "./client.js";
import type { PinnedSocket } from "./socket.js";
import { WrongWorkspaceError, checkWorkspace, pinTargetSocket, targetAddress, targetKey, type BridgeTarget } from "./target.js";

// Targets and the checked dial live in target.ts; callers import them from here too.
export {
  LEGACY_BRIDGE_PORT,
  WrongWorkspaceError,
  checkWorkspace,
  defaultSocketPath,
  legacyTarget,
  openBridgeClient,
  reportedWorkspace,
  targetAddress,
  unixTarget,
  type BridgeTarget,
} from "./target.js";

export interface BridgePoolOptions {
  /**
   * Where the bot's agent listens now. Called when the pool builds a client;
   * when the target changes (container replaced, legacy IP re-learned) call
   * evict(), or set revalidateTarget.
   */
  resolveTarget(botId: string): BridgeTarget | Promise<BridgeTarget>;
  /** Resolve the target on every get() and replace the client when its address changed (default false). */
  revalidateTarget?: boolean;
  /** How long get() waits for a channel to become ready (default 10 s). */
  readyTimeoutMs?: number;
  /** A channel CONNECTING for longer than this is replaced (default 30 s). */
  stuckConnectingMs?: number;
  /** Deadline of every unary call that sets none (default 30 s). */
  callTimeoutMs?: number;
  /** HTTP/2 keepalive ping interval (default 30 s) and ping answer timeout (default 10 s). */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** Extra grpc-js channel options (tests). */
  channelOptions?: grpc.ChannelOptions;
}

interface Entry {
  readonly botId: string;
  /** The target as resolved, and its address (`unix:<path>` or host:port) for messages. */
  readonly target: BridgeTarget;
  readonly address: string;
  readonly key: string;
  /** The pinned socket of a unix target: when its path no longer names it, the agent is gone. */
  readonly socket: PinnedSocket | undefined;
  readonly client: BridgeClient;
  /** Settles when the channel first became ready and passed the workspace check, or rejects (and the entry is dropped). */
  ready: Promise<void>;
  /** The channel has been READY at least once. */
  wasReady: boolean;
  /** The first connection passed the workspace check: get() may hand the client out. */
  verified: boolean;
  closed: boolean;
  /** Why the entry was dropped, once it was. */
  dropReason: EvictReason | undefined;
  /** Rejects pending readiness waits when the entry is dropped. */
  readonly abortWaits: Set<(reason: EvictReason) => void>;
  stuckTimer: NodeJS.Timeout | undefined;
}

export type EvictReason =
  | "broken"
  | "disconnected"
  | "stuck-connecting"
  | "not-ready"
  | "wrong-workspace"
  | "unavailable"
  | "explicit"
  | "closed";

const READY = grpc.connectivityState.READY;
const CONNECTING = grpc.connectivityState.CONNECTING;
const TRANSIENT_FAILURE = grpc.connectivityState.TRANSIENT_FAILURE;
const SHUTDOWN = grpc.connectivityState.SHUTDOWN;

/** The longest timer Node runs (about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function stateName(state: grpc.connectivityState): string {
  return grpc.connectivityState[state] ?? String(state);
}

const REASON_TEXT: Record<EvictReason, string> = {
  broken: "its channel failed",
  disconnected: "its connection closed",
  "stuck-connecting": "it was stuck connecting",
  "not-ready": "it did not become ready",
  "wrong-workspace": "the agent there serves another workspace",
  unavailable: "a call found it unavailable",
  explicit: "it was evicted",
  closed: "the pool was closed",
};

export class BridgePool {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Entry>>();
  private readonly readyTimeoutMs: number;
  private readonly stuckConnectingMs: number;
  private readonly callTimeoutMs: number;
  private readonly channelOptions: grpc.ChannelOptions;
  private closed = false;
  /** Called after an entry was dropped (logging, tests). */
  onEvict: ((botId: string, reason: EvictReason) => void) | undefined;

  constructor(private readonly opts: BridgePoolOptions) {
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
    this.stuckConnectingMs = opts.stuckConnectingMs ?? 30_000;
    this.callTimeoutMs = opts.callTimeoutMs ?? 30_000;
    this.channelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // The agent's server permits pings without calls (agent/server.ts), and
      // grpc-js servers do not police ping rates, so idle channels can probe.
      "grpc.keepalive_time_ms": opts.keepaliveTimeMs ?? 30_000,
      "grpc.keepalive_timeout_ms": opts.keepaliveTimeoutMs ?? 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      // While a workspace starts, its socket appears within a second or so:
      // retry soon rather than backing off for minutes.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2_000,
      // grpc-js closes the connection of a channel without calls for 30 min,
      // and the next tool call pays a reconnect. Keepalive already checks an
      // idle connection, and evict()/close() release it, so keep it open.
      "grpc.client_idle_timeout_ms": MAX_TIMER_MS,
      ...opts.channelOptions,
    };
  }

  /** Where the bot's agent listens, as the manager resolves it now. */
  async target(botId: string): Promise<BridgeTarget> {
    return this.opts.resolveTarget(botId);
  }

  /** Whether the pool holds a client for the bot. */
  has(botId: string): boolean {
    return this.entries.has(botId);
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * A client whose channel is ready and whose agent passed the workspace
   * check, building one when needed. Fails with UNAVAILABLE (naming the bot
   * and its target) when the socket is missing or not a socket, when the agent
   * is not ready within readyTimeoutMs, when its channel stays CONNECTING
   * longer than stuckConnectingMs, or when it serves another workspace.
   */
  async get(botId: string): Promise<BridgeClient> {
    if (this.closed) throw new RpcError(Status.UNAVAILABLE, `bridge pool is closed (bot ${botId})`);
    let entry = this.entries.get(botId);
    if (entry && this.opts.revalidateTarget) {
      const key = targetKey(await this.resolve(botId));
      const current = this.entries.get(botId);
      if (current && current.key !== key) this.drop(current, "explicit");
      entry = this.entries.get(botId);
    }
    if (entry?.verified) {
      const channel = entry.client.rpc.raw.getChannel();
      const state = channel.getConnectivityState(false);
      if (state === READY) return entry.client;
      if (state === TRANSIENT_FAILURE || state === SHUTDOWN) {
        this.drop(entry, "broken");
        entry = undefined;
      } else if (entry.socket === undefined || !entry.socket.stillAtPath()) {
        // TCP: a reconnect may reach whoever has the IP now. Unix: the socket
        // was removed or replaced; its agent is gone.
        this.drop(entry, "disconnected");
        entry = undefined;
      } else {
        // A unix channel IDLE (its connection closed) or CONNECTING: grpc-js
        // reconnects it through the pinned socket, bounded like a first connection.
        channel.getConnectivityState(true);
        try {
          await this.waitReady(entry);
          await this.verify(entry);
          return entry.client;
        } catch (err) {
          // The agent refused the reconnect (restarting, replaced): wait for it
          // on a fresh client, as after any broken channel.
          if (entry.dropReason !== "broken" || this.closed) throw err;
          entry = this.entries.get(botId);
        }
      }
    }
    entry ??= await this.create(botId);
    await entry.ready;
    return entry.client;
  }

  /**
   * Runs fn with the bot's client. When fn fails with UNAVAILABLE (the agent
   * went away, the connection dropped) the entry is evicted and fn runs once
   * more on a fresh client; pass retry:false for calls that must not repeat.
   */
  async call<T>(botId: string, fn: (client: BridgeClient) => Promise<T>, opts: { retry?: boolean } = {}): Promise<T> {
    const client = await this.get(botId);
    try {
      return await fn(client);
    } catch (err) {
      if (rpcCode(err) !== Status.UNAVAILABLE) throw err;
      this.evictClient(botId, client, "unavailable");
      if (opts.retry === false) throw withBot(botId, err);
    }
    const fresh = await this.get(botId);
    try {
      return await fn(fresh);
    } catch (err) {
      if (rpcCode(err) === Status.UNAVAILABLE) {
        this.evictClient(botId, fresh, "unavailable");
        throw withBot(botId, err);
      }
      throw err;
    }
  }

  /** Drops the bot's client (its container was replaced or removed, or its target changed). */
  evict(botId: string): void {
    const entry = this.entries.get(botId);
    if (entry) this.drop(entry, "explicit");
  }

  /** Closes every client; later get() calls fail. */
  close(): void {
    this.closed = true;
    for (const entry of [...this.entries.values()]) this.drop(entry, "closed");
  }

  // ------------------------------------------------------------------ internals

  private evictClient(botId: string, client: BridgeClient, reason: EvictReason): void {
    const entry = this.entries.get(botId);
    if (entry && entry.client === client) this.drop(entry, reason);
  }

  private async resolve(botId: string): Promise<BridgeTarget> {
    try {
      return await this.opts.resolveTarget(botId);
    } catch (err) {
      throw new RpcError(Status.UNAVAILABLE, `bridge of bot ${botId}: cannot resolve its target: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  private create(botId: string): Promise<Entry> {
    const inflight = this.pending.get(botId);
    if (inflight) return inflight;
    const creating = (async () => {
      const target = await this.resolve(botId);
      const address = targetAddress(target);
      const key = targetKey(target);
      if (this.closed) throw new RpcError(Status.UNAVAILABLE, `bridge pool is closed (bot ${botId})`);
      // A concurrent get() may have built one meanwhile: never hold two
      // channels for a bot (the replaced one would never be closed).
      const existing = this.entries.get(botId);
      if (existing && existing.key === key) return existing;
      if (existing) this.drop(existing, "explicit");
      // No socket (or something else at its path), no agent: answer at once
      // rather than wait out the readiness bound.
      const socket = target.kind === "unix" ? pinTargetSocket(target.socketPath, `bridge of bot ${botId} at ${address}`) : undefined;
      const client = new BridgeClient(socket?.address ?? address, {
        defaultTimeoutMs: this.callTimeoutMs,
        channelOptions: this.channelOptions,
        socket,
      });
      const entry: Entry = {
        botId,
        target,
        address,
        key,
        socket,
        client,
        ready: Promise.resolve(),
        wasReady: false,
        verified: false,
        closed: false,
        dropReason: undefined,
        abortWaits: new Set(),
        stuckTimer: undefined,
      };
      this.entries.set(botId, entry);
      this.watch(entry, client.rpc.raw.getChannel().getConnectivityState(true));
      entry.ready = this.waitReady(entry)
        .then(() => this.verify(entry))
        .then(() => {
          entry.verified = true;
        });
      // Every get() awaits it; keep an unobserved rejection from surfacing.
      entry.ready.catch(() => {});
      return entry;
    })();
    this.pending.set(botId, creating);
    const clear = () => {
      if (this.pending.get(botId) === creating) this.pending.delete(botId);
    };
    creating.then(clear, clear);
    return creating;
  }

  /** Follows the channel's state: drops the entry when it breaks or hangs connecting. */
  private watch(entry: Entry, current: grpc.connectivityState): void {
    if (entry.closed) return;
    if (current === READY) entry.wasReady = true;
    if (current === CONNECTING) {
      entry.stuckTimer ??= setTimeout(() => this.drop(entry, "stuck-connecting"), this.stuckConnectingMs);
      entry.stuckTimer.unref();
    } else if (entry.stuckTimer) {
      clearTimeout(entry.stuckTimer);
      entry.stuckTimer = undefined;
    }
    const channel = entry.client.rpc.raw.getChannel();
    channel.watchConnectivityState(current, Infinity, () => {
      if (entry.closed) return;
      const next = channel.getConnectivityState(false);
      // Before the first READY a failure is expected (the agent is still
      // starting): the readiness wait keeps retrying within its bound.
      if (entry.wasReady && (next === TRANSIENT_FAILURE || next === SHUTDOWN)) {
        this.drop(entry, "broken");
        return;
      }
      // READY → IDLE: the connection closed (the channel's idle timer, the
      // agent restarted, keepalive timed out). A TCP entry goes: its next
      // connection could reach another workspace that got the IP, and only a
      // fresh entry checks who answers. A unix entry stays while its path
      // still names the pinned socket: the next call reconnects to the same
      // agent, and drops it when that fails. A socket that is gone or replaced
      // means its agent stopped; the workspace will listen on a new one.
      if (current === READY && next !== READY && (entry.socket === undefined || !entry.socket.stillAtPath())) {
        this.drop(entry, "disconnected");
        return;
      }
      this.watch(entry, next);
    });
  }

  /**
   * The workspace check of a new connection: Info must name target.workspaceId
   * (when set). Drops the entry and fails with UNAVAILABLE naming the bot, the
   * expected and the found identity.
   */
  private async verify(entry: Entry): Promise<void> {
    if (entry.target.workspaceId === undefined) return;
    try {
      await checkWorkspace(entry.client, entry.target, this.readyTimeoutMs, `bridge of bot ${entry.botId} at ${entry.address}`);
    } catch (err) {
      this.drop(entry, err instanceof WrongWorkspaceError ? "wrong-workspace" : "not-ready");
      if (err instanceof WrongWorkspaceError) throw err;
      const why = err instanceof Error ? err.message : String(err);
      throw new RpcError(Status.UNAVAILABLE, `bridge of bot ${entry.botId} at ${entry.address}: the workspace check (Info) failed: ${why}`, { cause: err });
    }
  }

  /** Waits (bounded) until the entry's channel is READY; drops the entry and names the bot when it is not. */
  private waitReady(entry: Entry): Promise<void> {
    return this.channelReady(entry, this.readyTimeoutMs).then(
      () => {
        entry.wasReady = true;
      },
      (err: unknown) => {
        const state = entry.closed ? SHUTDOWN : entry.client.rpc.raw.getChannel().getConnectivityState(false);
        const why =
          entry.dropReason === "stuck-connecting"
            ? `stuck connecting for more than ${this.stuckConnectingMs} ms`
            : entry.dropReason
              ? REASON_TEXT[entry.dropReason]
              : `not ready within ${this.readyTimeoutMs} ms (channel ${stateName(state)})`;
        this.drop(entry, "not-ready");
        throw new RpcError(Status.UNAVAILABLE, `bridge of bot ${entry.botId} at ${entry.address}: ${why}`, { cause: err });
      },
    );
  }

  /**
   * Resolves when the channel is READY. Not grpc-js's waitForReady: its
   * deadline timer outlives an abandoned wait and holds the process open.
   */
  private channelReady(entry: Entry, timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const channel = entry.client.rpc.raw.getChannel();
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        entry.abortWaits.delete(abort);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
      const abort = (reason: EvictReason) => finish(new Error(REASON_TEXT[reason]));
      entry.abortWaits.add(abort);
      const check = () => {
        if (done) return;
        let state: grpc.connectivityState;
        try {
          state = channel.getConnectivityState(true);
        } catch {
          return finish(new Error("the channel is closed"));
        }
        if (state === READY) return finish();
        if (state === SHUTDOWN) return finish(new Error("the channel is closed"));
        // No deadline here: the timer above bounds the wait, and closing the
        // channel (drop) fires this watcher with SHUTDOWN.
        channel.watchConnectivityState(state, Infinity, check);
      };
      check();
    });
  }

  private drop(entry: Entry, reason: EvictReason): void {
    if (entry.closed) return;
    entry.closed = true;
    entry.dropReason = reason;
    if (entry.stuckTimer) clearTimeout(entry.stuckTimer);
    if (this.entries.get(entry.botId) === entry) this.entries.delete(entry.botId);
    for (const abort of entry.abortWaits) abort(reason);
    entry.abortWaits.clear();
    entry.client.close();
    this.onEvict?.(entry.botId, reason);
  }
}

function withBot(botId: string, err: unknown): RpcError {
  const code = rpcCode(err) ?? Status.UNAVAILABLE;
  const message = err instanceof Error ? err.message : String(err);
  return new RpcError(code, `bridge of bot ${botId}: ${message}`, { cause: err });
}
