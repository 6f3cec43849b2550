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
}

export interface RunningAgent {
  readonly ctx: AgentContext;
  readonly server: grpc.Server;
  /** A grpc-js target that reaches this agent: "unix:/path" or "host:port". */
  readonly target: string;
  /** Stop accepting, let in-flight calls finish for graceMs, then kill children and close. */
  shutdown(graceMs?: number): Promise<void>;
}

export const serverOptions: grpc.ServerOptions = {
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_permit_without_calls": 1,
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

function bind(server: grpc.Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
  });
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  await fs.mkdir(opts.dataDir, { recursive: true });
  const ctx = createContext(path.resolve(opts.dataDir));
  if (opts.writeIdleMs !== undefined) ctx.writeIdleMs = opts.writeIdleMs;
  if (opts.workspaceId) ctx.workspaceId = opts.workspaceId;
  if (opts.imageEnv) ctx.childEnv = { kind: "image", vars: { ...opts.imageEnv } };
  if (opts.childOomScoreAdj !== undefined) ctx.childOomScoreAdj = opts.childOomScoreAdj;
  const server = new grpc.Server(serverOptions);
  addService(server, ContainerService, containerServiceHandlers(ctx), mapAgentError);
  const health = new HealthState([ContainerService.typeName]);
  addHealthService(server, health);
  addReflectionService(server, [file_memoh_bridge_v1_bridge, file_grpc_health_v1_health], [
    ContainerService.typeName,
    Health.typeName,
  ]);

  let target: string;
  let socketPath: string | undefined;
  let boundSocket: SocketIdentity | undefined;
  if (opts.tcpAddr) {
    const port = await bind(server, opts.tcpAddr);
    const host = opts.tcpAddr.slice(0, opts.tcpAddr.lastIndexOf(":"));
    ctx.listen = `tcp:${host}:${port}`;
    target = `${host === "0.0.0.0" || host === "" ? "127.0.0.1" : host}:${port}`;
  } else {
    socketPath = path.resolve(opts.socketPath ?? "/run/memoh/bridge.sock");
    await prepareSocketPath(socketPath);
    boundSocket = await bindSocketFile(socketPath, (address) => bind(server, address));
    ctx.listen = `unix:${socketPath}`;
    target = `unix:${socketPath}`;
  }

  let stopping: Promise<void> | undefined;
  const shutdown = (graceMs = 5000): Promise<void> => {
    stopping ??= (async () => {
      health.setAll(ServingStatus.NOT_SERVING);
      // The path goes first (if it is still ours), as the listener stops: no new
      // client finds a draining agent, and a new agent may bind the path at once.
      await removeOwnSocket(boundSocket).catch((err: unknown) => logLine(`cannot remove ${socketPath}: ${String(err)}`));
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

  return { ctx, server, target, shutdown };
}
