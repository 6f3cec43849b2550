// containerd errors keep a stable code, so callers ask "not found?" without
// matching message strings (containerd's errdefs, in TypeScript).
import { Status, rpcCode } from "../../proto/rpc.js";

export type ContainerdErrorCode =
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "invalid_argument"
  | "unavailable"
  | "deadline_exceeded"
  | "cancelled"
  | "permission_denied"
  | "resource_exhausted"
  | "unimplemented"
  | "aborted"
  | "digest_mismatch"
  | "registry"
  | "unknown";

const fromStatus: Partial<Record<number, ContainerdErrorCode>> = {
  [Status.NOT_FOUND]: "not_found",
  [Status.ALREADY_EXISTS]: "already_exists",
  [Status.FAILED_PRECONDITION]: "failed_precondition",
  [Status.INVALID_ARGUMENT]: "invalid_argument",
  [Status.UNAVAILABLE]: "unavailable",
  [Status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [Status.CANCELLED]: "cancelled",
  [Status.PERMISSION_DENIED]: "permission_denied",
  [Status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [Status.UNIMPLEMENTED]: "unimplemented",
  [Status.ABORTED]: "aborted",
};

export class ContainerdError extends Error {
  readonly code: ContainerdErrorCode;
  constructor(code: ContainerdErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ContainerdError";
    this.code = code;
  }
}

/** Wraps any error from a containerd call; `what` says which call, for the message. */
export function toContainerdError(err: unknown, what: string): ContainerdError {
  if (err instanceof ContainerdError) return err;
  const status = rpcCode(err);
  const code = (status !== undefined && fromStatus[status]) || "unknown";
  const detail = err instanceof Error ? err.message : String(err);
  return new ContainerdError(code, `${what}: ${detail}`, { cause: err });
}

export const isNotFound = (err: unknown) => err instanceof ContainerdError && err.code === "not_found";
export const isAlreadyExists = (err: unknown) => err instanceof ContainerdError && err.code === "already_exists";
