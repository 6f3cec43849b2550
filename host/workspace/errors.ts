// The one error type that leaves the workspace layer. Every public method of the
// manager translates whatever went wrong below it (containerd, the bridge agent, CNI,
// the store, the lock) into a WorkspaceError with a stable string code, once, at its
// boundary (toWorkspaceError). The HTTP layer maps codes to statuses without matching
// message strings; `reason` says more for logs and tests where one code covers
// several causes.
import { ContainerdError, type ContainerdErrorCode } from "../containerd/errors.js";
import { CdiError } from "../containerd/cdi.js";
import { CniConfigError, CniError, NetworkSetupError } from "../network/errors.js";
import { StoreError } from "../store/store.js";
import { RpcError, Status, rpcCode, type StatusCode } from "../../proto/rpc.js";

export type WorkspaceErrorCode =
  | "invalid_argument"
  | "not_found"
  /** The request contradicts the workspace's state (stopped, different image or limits…). */
  | "conflict"
  | "permission_denied"
  | "payload_too_large"
  | "resource_exhausted"
  /** containerd, the agent or a bot's lock is not available now; trying again later may work. */
  | "unavailable"
  | "deadline_exceeded"
  /** The caller went away (its AbortSignal fired); the operation itself runs on. */
  | "cancelled"
  | "internal";

/** Finer causes behind a code, for logs and tests. */
export type WorkspaceErrorReason =
  /** The task started but its network could not be set up; the task was removed again. */
  | "network"
  /** The agent did not answer Info within the bound after start. */
  | "not_ready"
  /** The agent speaks another protocol version than the runtime bundle's contract. */
  | "protocol_mismatch"
  /** The agent died during a call that is not safe to repeat; it was restarted, the call not re-run. */
  | "agent_restarted"
  /** A caller waited longer than the lock timeout for another operation on the same bot. */
  | "lock_timeout"
  /** The OCI runtime (runc) refused to create the task: the workspace's root filesystem or spec. */
  | "runtime"
  /** An import or restore of /data was cut short and its repair has not succeeded: the task is not started. */
  | "data_op_unrepaired"
  | "containerd"
  | "bridge"
  | "store";

export class WorkspaceError extends Error {
  readonly reason: WorkspaceErrorReason | undefined;
  constructor(
    readonly code: WorkspaceErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: WorkspaceErrorReason },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WorkspaceError";
    this.reason = options?.reason;
  }
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const FROM_CONTAINERD: Record<ContainerdErrorCode, WorkspaceErrorCode> = {
  not_found: "not_found",
  already_exists: "conflict",
  failed_precondition: "conflict",
  invalid_argument: "invalid_argument",
  unavailable: "unavailable",
  deadline_exceeded: "deadline_exceeded",
  cancelled: "cancelled",
  permission_denied: "permission_denied",
  resource_exhausted: "resource_exhausted",
  unimplemented: "internal",
  aborted: "conflict",
  digest_mismatch: "invalid_argument",
  registry: "unavailable",
  unknown: "internal",
};

const FROM_GRPC: Partial<Record<StatusCode, WorkspaceErrorCode>> = {
  [Status.INVALID_ARGUMENT]: "invalid_argument",
  [Status.NOT_FOUND]: "not_found",
  [Status.ALREADY_EXISTS]: "conflict",
  [Status.FAILED_PRECONDITION]: "conflict",
  [Status.ABORTED]: "conflict",
  [Status.OUT_OF_RANGE]: "invalid_argument",
  [Status.PERMISSION_DENIED]: "permission_denied",
  [Status.UNAUTHENTICATED]: "permission_denied",
  [Status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [Status.UNAVAILABLE]: "unavailable",
  [Status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [Status.CANCELLED]: "cancelled",
};

/**
 * The translation: a WorkspaceError for anything thrown below the manager. Known
 * error classes keep their meaning; anything else is "internal" (its message kept,
 * for the log; the HTTP layer does not show internals to clients).
 */
export function toWorkspaceError(err: unknown): WorkspaceError {
  if (err instanceof WorkspaceError) return err;
  if (err instanceof ContainerdError) {
    return new WorkspaceError(FROM_CONTAINERD[err.code], err.message, { cause: err, reason: "containerd" });
  }
  if (err instanceof CdiError) return new WorkspaceError("invalid_argument", err.message, { cause: err });
  if (err instanceof NetworkSetupError || err instanceof CniError || err instanceof CniConfigError) {
    return new WorkspaceError("unavailable", err.message, { cause: err, reason: "network" });
  }
  if (err instanceof StoreError) {
    const code: WorkspaceErrorCode = err.code === "conflict" ? "conflict" : err.code === "not_found" ? "not_found" : "invalid_argument";
    return new WorkspaceError(code, err.message, { cause: err, reason: "store" });
  }
  const grpc = err instanceof RpcError || isGrpcServiceError(err) ? rpcCode(err) : undefined;
  if (grpc !== undefined) {
    return new WorkspaceError(FROM_GRPC[grpc] ?? "internal", describeError(err), { cause: err, reason: "bridge" });
  }
  return new WorkspaceError("internal", describeError(err), { cause: err });
}

/** A grpc-js ServiceError: an Error with a numeric code and a metadata object. */
function isGrpcServiceError(err: unknown): boolean {
  return err instanceof Error && typeof (err as { code?: unknown }).code === "number" && "metadata" in err;
}
