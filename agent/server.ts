// The agent's gRPC server: ContainerService, health and reflection on a Unix
// socket (default) or a TCP address (legacy mcp- containers).
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { MAX_MESSAGE_BYTES } from "../proto/constants.js";
import { addService } from "../proto/rpc.js";
import { ContainerService, file_memoh_bridge_v1_bridge } from "../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Health, file_grpc_health_v1_health } from "../proto/gen/grpc/health/v1/health_pb.js";
import { createContext, type AgentContext } from "./context.js";
import { mapAgentError } from "./errors.js";
import { addHealthService, HealthState, ServingStatus } from "./grpc/health.js";
import { addReflectionService } from "./grpc/reflection.js";
import { containerServiceHandlers } from "./service.js";
import { killAllChildren } from "./exec/children.js";
import { logLine } from "./log.js";
import { listen, type Listener, type ListenerStats } from "./grpc/listener.js";
import {
  ByteBudget,
  defaultBudgetOptions,
  defaultReceiveBudgetOptions,
  defaultStreamBudgetOptions,
  setBudgets,
  type ByteBudgetOptions,
} from "./budget.js";
import { receiveBudgetInterceptor } from "./grpc/receive-budget.js";
import { sendFramesAsTheyAre } from "./grpc/framed-send.js";
import {
  CONNECTION_IDLE_MS,
  HANDSHAKE_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_STREAMS_PER_CONNECTION,
  RECEIVE_COST_FACTOR,
  RECEIVE_UNLEASED_MAX_BYTES,
} from "./limits.js";
import { bindSocketFile, removeOwnSocket, type SocketIdentity } from "./socket-file.js";

export interface AgentOptions {
  dataDir: string;
  /** Unix socket path; used unless tcpAddr is set. */
  socketPath?: string;
  /** "host:port" for legacy containers; port 0 picks a free port. */
  tcpAddr?: string;
  /** Overrides WRITE_IDLE_MS (tests). */
  writeIdleMs?: number;
  /** The workspace this agent serves (BRIDGE_WORKSPACE_ID); Info reports the hostname without it. */
  workspaceId?: string;
  /**
   * The image's environment (BRIDGE_IMAGE_ENV, parsed): the base of every
   * spawned process's environment. Without it, processes inherit the agent's
   * environment minus its BRIDGE_* settings (containers of older hosts).
   */
  imageEnv?: Readonly<Record<string, string>>;
  /** oom_score_adj of every spawned process (BRIDGE_CHILD_OOM_SCORE_ADJ, default 0). */
  childOomScoreAdj?: number;
  /** Overrides of the connection limits and the file budget (tests); BRIDGE_* variables come next, then the defaults. */
  limits?: Partial<AgentLimits>;
}

/** The limits that bound what callers can make the agent hold (see limits.ts for each default). */
export interface AgentLimits {
  maxConnections: number;
  maxStreamsPerConnection: number;
  handshakeTimeoutMs: number;
  connectionIdleMs: number;
  fileBudget: ByteBudgetOptions;
  streamBudget: ByteBudgetOptions;
  receiveBudget: ByteBudgetOptions;
}

export const defaultLimits: AgentLimits = {
  maxConnections: MAX_CONNECTIONS,
  maxStreamsPerConnection: MAX_STREAMS_PER_CONNECTION,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  connectionIdleMs: CONNECTION_IDLE_MS,
  fileBudget: defaultBudgetOptions,
  streamBudget: defaultStreamBudgetOptions,
  receiveBudget: defaultReceiveBudgetOptions,
};

/**
 * Limits set through the environment: BRIDGE_MAX_CONNECTIONS,
 * BRIDGE_MAX_STREAMS_PER_CONNECTION, BRIDGE_HANDSHAKE_TIMEOUT_MS,
 * BRIDGE_CONNECTION_IDLE_MS, BRIDGE_FILE_BUDGET_BYTES, BRIDGE_BUDGET_WAIT_MS
 * (how long ReadFile, ReadRaw and request messages alike wait for their
 * budgets; positive integers).
 * A bad value is logged and ignored.
 */
export function limitsFromEnv(env: NodeJS.ProcessEnv): Partial<AgentLimits> {
  const out: Partial<AgentLimits> = {};
  const num = (name: string): number | undefined => {
    const raw = env[name];
    if (raw === undefined || raw === "") return undefined;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n <= 0) {
      logLine(`$${name}: expected a positive integer, got ${JSON.stringify(raw)}; using the default`);
      return undefined;
    }
    return n;
  };
  const set = <K extends Exclude<keyof AgentLimits, "fileBudget" | "streamBudget" | "receiveBudget">>(key: K, name: string): void => {
    const n = num(name);
    if (n !== undefined) out[key] = n;
  };
  set("maxConnections", "BRIDGE_MAX_CONNECTIONS");
  set("maxStreamsPerConnection", "BRIDGE_MAX_STREAMS_PER_CONNECTION");
  set("handshakeTimeoutMs", "BRIDGE_HANDSHAKE_TIMEOUT_MS");
  set("connectionIdleMs", "BRIDGE_CONNECTION_IDLE_MS");
  const budget = num("BRIDGE_FILE_BUDGET_BYTES");
  if (budget !== undefined) {
    if (budget <= defaultBudgetOptions.reserve * 2) logLine(`$BRIDGE_FILE_BUDGET_BYTES: at least ${defaultBudgetOptions.reserve * 2 + 1} bytes; using the default`);
    else out.fileBudget = { ...defaultBudgetOptions, capacity: budget };
  }
  const wait = num("BRIDGE_BUDGET_WAIT_MS");
  if (wait !== undefined) {
    out.fileBudget = { ...(out.fileBudget ?? defaultBudgetOptions), maxWaitMs: wait };
    out.streamBudget = { ...defaultStreamBudgetOptions, maxWaitMs: wait };
    out.receiveBudget = { ...defaultReceiveBudgetOptions, maxWaitMs: wait };
  }
  return out;
}

export interface RunningAgent {
  readonly ctx: AgentContext;
  readonly server: grpc.Server;
  /** A grpc-js target that reaches this agent: "unix:/path" or "host:port". */
  readonly target: string;
  /** The limits in force. */
  readonly limits: AgentLimits;
  /** Connections open, refused and closed without a handshake so far. */
  connections(): ListenerStats;
  /** The budget request messages lease from before they are received (grpc/receive-budget.ts). */
  readonly receiveBudget: ByteBudget;
  /** Stop accepting, let in-flight calls finish for graceMs, then kill children and close. */
  shutdown(graceMs?: number): Promise<void>;
}

export const serverOptions: grpc.ServerOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_permit_without_calls": 1,
  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: a client opens no more calls at once on one connection.
  "grpc.max_concurrent_streams": MAX_STREAMS_PER_CONNECTION,
  // A connection without calls for this long gets GOAWAY and is closed.
  "grpc.max_connection_idle_ms": CONNECTION_IDLE_MS,
};

function isLiveSocket(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/**
 * Makes room for the socket: creates its dir and removes a stale socket left by
 * a dead agent, or a symlink (the host never follows one there, so it only
 * keeps the workspace unreachable until removed).
 */
async function prepareSocketPath(socketPath: string): Promise<void> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true });
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (st.isSymbolicLink()) {
    logLine(`${socketPath} is a symbolic link (to ${await fs.readlink(socketPath).catch(() => "?")}); replacing it with the agent's socket`);
    await fs.unlink(socketPath);
    return;
  }
  if (!st.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  if (await isLiveSocket(socketPath)) throw new Error(`another process is serving ${socketPath}`);
  await fs.unlink(socketPath);
}

/** "host:port", "[v6]:port" or ":port" (all addresses). */
function parseTcpAddr(addr: string): { host: string; port: number } {
  const colon = addr.lastIndexOf(":");
  const port = Number(addr.slice(colon + 1));
  if (colon === -1 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad TCP address ${JSON.stringify(addr)}: expected host:port`);
  let host = addr.slice(0, colon);
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  return { host: host === "" ? "0.0.0.0" : host, port };
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  await fs.mkdir(opts.dataDir, { recursive: true });
  const ctx = createContext(path.resolve(opts.dataDir));
  if (opts.writeIdleMs !== undefined) ctx.writeIdleMs = opts.writeIdleMs;
  if (opts.workspaceId) ctx.workspaceId = opts.workspaceId;
  if (opts.imageEnv) ctx.childEnv = { kind: "image", vars: { ...opts.imageEnv } };
  if (opts.childOomScoreAdj !== undefined) ctx.childOomScoreAdj = opts.childOomScoreAdj;
  const limits: AgentLimits = { ...defaultLimits, ...limitsFromEnv(process.env), ...opts.limits };
  setBudgets(ctx, new ByteBudget(limits.fileBudget), new ByteBudget(limits.streamBudget));
  const receiveBudget = new ByteBudget(limits.receiveBudget);
  if (!sendFramesAsTheyAre()) logLine("grpc-js has no serializeMessage to wrap: bulk replies are copied into their frames");
  const server = new grpc.Server({
    ...serverOptions,
    "grpc.max_concurrent_streams": limits.maxStreamsPerConnection,
    "grpc.max_connection_idle_ms": limits.connectionIdleMs,
    interceptors: [
      receiveBudgetInterceptor(receiveBudget, {
        unleasedMax: RECEIVE_UNLEASED_MAX_BYTES,
        costFactor: RECEIVE_COST_FACTOR,
        maxMessageBytes: MAX_MESSAGE_BYTES,
      }),
    ],
  });
  addService(server, ContainerService, containerServiceHandlers(ctx), mapAgentError);
  const health = new HealthState([ContainerService.typeName]);
  addHealthService(server, health);
  addReflectionService(server, [file_memoh_bridge_v1_bridge, file_grpc_health_v1_health], [
    ContainerService.typeName,
    Health.typeName,
  ]);

  const listenerLimits = { maxConnections: limits.maxConnections, handshakeTimeoutMs: limits.handshakeTimeoutMs };
  let target: string;
  let socketPath: string | undefined;
  let listener: Listener | undefined;
  let boundSocket: SocketIdentity | undefined;
  if (opts.tcpAddr) {
    const { host, port: wanted } = parseTcpAddr(opts.tcpAddr);
    listener = await listen(server, { host, port: wanted }, listenerLimits);
    const port = typeof listener.address === "string" ? wanted : listener.address.port;
    const shownHost = host.includes(":") ? `[${host}]` : host;
    ctx.listen = `tcp:${shownHost}:${port}`;
    target = `${host === "0.0.0.0" || host === "::" ? "127.0.0.1" : shownHost}:${port}`;
  } else {
    socketPath = path.resolve(opts.socketPath ?? "/run/memoh/bridge.sock");
    await prepareSocketPath(socketPath);
    boundSocket = await bindSocketFile(socketPath, async (address) => {
      listener = await listen(server, { path: address.slice("unix:".length) }, listenerLimits);
    });
    ctx.listen = `unix:${socketPath}`;
    target = `unix:${socketPath}`;
  }
  if (!listener) throw new Error("the agent's listener did not start");
  const served: Listener = listener;

  let stopping: Promise<void> | undefined;
  const shutdown = (graceMs = 5000): Promise<void> => {
    stopping ??= (async () => {
      health.setAll(ServingStatus.NOT_SERVING);
      // The path goes first (if it is still ours), as the listener stops: no new
      // client finds a draining agent, and a new agent may bind the path at once.
      await removeOwnSocket(boundSocket).catch((err: unknown) => logLine(`cannot remove ${socketPath}: ${String(err)}`));
      await served.close();
      const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
      });
      await Promise.race([drained, timedOut]);
      clearTimeout(timer);
      // Kills every session the agent started; the calls running them end with a status.
      await killAllChildren(ctx);
      // Let those last statuses reach their clients before the connections are cut.
      let flushTimer: NodeJS.Timeout | undefined;
      await Promise.race([drained, new Promise<void>((resolve) => (flushTimer = setTimeout(resolve, 1000)))]);
      clearTimeout(flushTimer);
      server.forceShutdown();
    })();
    return stopping;
  };

  return { ctx, server, target, limits, connections: () => served.stats(), receiveBudget, shutdown };
}
