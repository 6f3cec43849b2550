// Agent errors: everything a handler throws becomes a gRPC status with a clear
// message. Node's errno codes map onto the closest status code.
import { RpcError, Status, type StatusCode } from "../proto/rpc.js";

export { RpcError, Status };

export const invalidArgument = (message: string) => new RpcError(Status.INVALID_ARGUMENT, message);
export const notFound = (message: string) => new RpcError(Status.NOT_FOUND, message);
export const alreadyExists = (message: string) => new RpcError(Status.ALREADY_EXISTS, message);
export const failedPrecondition = (message: string) => new RpcError(Status.FAILED_PRECONDITION, message);
export const resourceExhausted = (message: string) => new RpcError(Status.RESOURCE_EXHAUSTED, message);

const errnoStatus: Record<string, { code: StatusCode; text: string }> = {
  ENOENT: { code: Status.NOT_FOUND, text: "no such file or directory" },
  EEXIST: { code: Status.ALREADY_EXISTS, text: "already exists" },
  EISDIR: { code: Status.INVALID_ARGUMENT, text: "is a directory" },
  ENOTDIR: { code: Status.FAILED_PRECONDITION, text: "not a directory" },
  ENOTEMPTY: { code: Status.FAILED_PRECONDITION, text: "directory not empty" },
  EACCES: { code: Status.PERMISSION_DENIED, text: "permission denied" },
  EPERM: { code: Status.PERMISSION_DENIED, text: "operation not permitted" },
  EROFS: { code: Status.FAILED_PRECONDITION, text: "read-only file system" },
  EXDEV: { code: Status.FAILED_PRECONDITION, text: "cross-device move" },
  EBUSY: { code: Status.FAILED_PRECONDITION, text: "resource busy" },
  ELOOP: { code: Status.INVALID_ARGUMENT, text: "too many levels of symbolic links" },
  ENAMETOOLONG: { code: Status.INVALID_ARGUMENT, text: "file name too long" },
  EINVAL: { code: Status.INVALID_ARGUMENT, text: "invalid argument" },
  ENOSPC: { code: Status.RESOURCE_EXHAUSTED, text: "no space left on device" },
  EDQUOT: { code: Status.RESOURCE_EXHAUSTED, text: "disk quota exceeded" },
  EMFILE: { code: Status.RESOURCE_EXHAUSTED, text: "too many open files" },
  ENFILE: { code: Status.RESOURCE_EXHAUSTED, text: "too many open files in system" },
  E2BIG: { code: Status.INVALID_ARGUMENT, text: "argument list too long" },
  ENOEXEC: { code: Status.INVALID_ARGUMENT, text: "exec format error" },
  ENXIO: { code: Status.FAILED_PRECONDITION, text: "no such device or address" },
  ENODEV: { code: Status.FAILED_PRECONDITION, text: "no such device" },
  ETXTBSY: { code: Status.FAILED_PRECONDITION, text: "text file busy" },
  EMLINK: { code: Status.RESOURCE_EXHAUSTED, text: "too many links" },
  ERR_INVALID_ARG_VALUE: { code: Status.INVALID_ARGUMENT, text: "invalid argument" },
  ERR_INVALID_ARG_TYPE: { code: Status.INVALID_ARGUMENT, text: "invalid argument" },
};

interface ErrnoLike {
  code?: unknown;
  path?: unknown;
  dest?: unknown;
  syscall?: unknown;
  message?: unknown;
}

/**
 * Converts a Node.js system error into an RpcError, or returns undefined.
 * `where` names the files in the message instead of the error's own paths:
 * Node reports Buffer paths decoded lossily, and a path the agent reached
 * through /proc/self/fd means nothing to the caller.
 */
export function fromErrno(err: unknown, ...where: string[]): RpcError | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as ErrnoLike;
  if (typeof e.code !== "string") return undefined;
  const known = errnoStatus[e.code];
  if (!known) return undefined;
  const named = where.length > 0 ? where : [e.path, e.dest].filter((p): p is string => typeof p === "string");
  const message = named.length > 0 ? `${named.join(" -> ")}: ${known.text}` : `${known.text}${typeof e.message === "string" ? ` (${e.message})` : ""}`;
  return new RpcError(known.code, message, { cause: err });
}

/** `err` as an RpcError naming `where` when it is a known system error; otherwise `err` itself. */
export function errnoAt(err: unknown, ...where: string[]): unknown {
  return fromErrno(err, ...where) ?? err;
}

/** The status every handler failure is answered with. */
export function mapAgentError(err: unknown): { code: StatusCode; details: string } {
  if (err instanceof RpcError) return { code: err.code, details: err.message };
  const errno = fromErrno(err);
  if (errno) return { code: errno.code, details: errno.message };
  const message = err instanceof Error ? err.message : String(err);
  return { code: Status.INTERNAL, details: `internal error: ${message}` };
}
