// Errors of the workspace manager keep a stable code, so the HTTP layer maps them
// to statuses without matching message strings.
export type WorkspaceErrorCode =
  | "invalid_argument"
  | "not_found"
  | "failed_precondition"
  /** containerd (or the bridge, after the one retry) does not answer. */
  | "unavailable"
  /** The task started but its network could not be set up; the task was removed again. */
  | "network"
  /** The agent did not answer Info within the bound after start. */
  | "not_ready"
  /** The agent speaks another protocol version than the runtime bundle's contract. */
  | "protocol_mismatch"
  | "internal";

export class WorkspaceError extends Error {
  constructor(
    readonly code: WorkspaceErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "WorkspaceError";
  }
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
