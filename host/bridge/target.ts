// Where a bot's agent listens (a BridgeTarget), and the checked way to dial one:
// a unix target through its pinned socket (socket.ts), never by path, and an Info
// check that the agent there serves the workspace the target names.
import path from "node:path";
import { LEGACY_BRIDGE_PORT } from "../../proto/constants.js";
import type { InfoResponse } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcError, Status } from "../../proto/rpc.js";
import { BridgeClient, type BridgeClientOptions } from "./client.js";
import { BridgeSocketError, pinSocket, type PinnedSocket } from "./socket.js";

export { LEGACY_BRIDGE_PORT };

/**
 * Where a bot's agent listens: its socket under the data root, or a legacy
 * container's IP. workspaceId is the identity the agent there must report in
 * Info (its container id); unset = not checked.
 */
export type BridgeTarget =
  | { kind: "unix"; socketPath: string; workspaceId?: string }
  | { kind: "tcp"; host: string; port: number; workspaceId?: string };

/** `<dataRoot>/run/<botId>/bridge.sock`: the host side of the container's /run/memoh mount. */
export function defaultSocketPath(dataRoot: string, botId: string): string {
  return path.join(path.resolve(dataRoot), "run", botId, "bridge.sock");
}

/** The default target of a workspace: its socket under the data root. */
export function unixTarget(dataRoot: string, botId: string, workspaceId?: string): BridgeTarget {
  const target: BridgeTarget = { kind: "unix", socketPath: defaultSocketPath(dataRoot, botId) };
  if (workspaceId !== undefined) target.workspaceId = workspaceId;
  return target;
}

/** The target of a legacy container reached at its CNI IP. */
export function legacyTarget(ip: string, port = LEGACY_BRIDGE_PORT, workspaceId?: string): BridgeTarget {
  const target: BridgeTarget = { kind: "tcp", host: ip, port };
  if (workspaceId !== undefined) target.workspaceId = workspaceId;
  return target;
}

/** The grpc-js address of a target: `unix:/abs/path`, `host:port`, `[v6]:port`. */
export function targetAddress(target: BridgeTarget): string {
  if (target.kind === "unix") {
    if (!path.isAbsolute(target.socketPath)) throw new Error(`bridge socket path must be absolute: ${target.socketPath}`);
    return `unix:${target.socketPath}`;
  }
  if (!Number.isInteger(target.port) || target.port <= 0 || target.port > 65535) {
    throw new Error(`bridge port out of range: ${target.port}`);
  }
  return target.host.includes(":") ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/** What makes two targets the same: where, and whom the agent there must be. */
export function targetKey(target: BridgeTarget): string {
  return `${targetAddress(target)}\0${target.workspaceId ?? ""}`;
}

/** The workspace an agent says it serves: workspace_id, or the hostname for agents that predate it. */
export function reportedWorkspace(info: InfoResponse): string {
  return info.workspaceId || info.hostname;
}

/** The agent at a target serves another workspace than the target names (UNAVAILABLE). */
export class WrongWorkspaceError extends RpcError {
  constructor(
    who: string,
    readonly expected: string,
    readonly found: string,
  ) {
    super(Status.UNAVAILABLE, `${who}: the agent there serves workspace ${JSON.stringify(found)}, expected ${JSON.stringify(expected)}`);
    this.name = "WrongWorkspaceError";
  }
}

/**
 * A client for target that never follows a link at a unix target's socket
 * path (socket.ts); the caller closes it. Throws UNAVAILABLE naming the socket
 * when it is missing or not a socket. For one-off probes; the pool builds its
 * clients the same way.
 */
export function openBridgeClient(target: BridgeTarget, opts: BridgeClientOptions = {}): BridgeClient {
  const address = targetAddress(target);
  if (target.kind === "tcp") return new BridgeClient(address, opts);
  const socket = pinTargetSocket(target.socketPath, `bridge at ${address}`);
  return new BridgeClient(socket.address, { ...opts, socket });
}

/**
 * Calls Info and refuses (WrongWorkspaceError: UNAVAILABLE naming the expected
 * and the found identity) an agent that serves another workspace than
 * target.workspaceId. Without a workspaceId nothing is compared.
 */
export async function checkWorkspace(client: BridgeClient, target: BridgeTarget, timeoutMs: number, who = `bridge at ${targetAddress(target)}`): Promise<InfoResponse> {
  const info = await client.info({ timeoutMs });
  const expected = target.workspaceId;
  if (expected !== undefined && reportedWorkspace(info) !== expected) throw new WrongWorkspaceError(who, expected, reportedWorkspace(info));
  return info;
}

export function pinTargetSocket(socketPath: string, who: string): PinnedSocket {
  try {
    return pinSocket(socketPath);
  } catch (err) {
    if (!(err instanceof BridgeSocketError)) throw err;
    const why = err.problem === "missing" ? "the socket does not exist (is the workspace running?)" : err.message;
    throw new RpcError(Status.UNAVAILABLE, `${who}: ${why}`, { cause: err });
  }
}
