// The API's errors: `{"error":{"code","message"}}` with a stable code and the HTTP
// status it maps to, in one place. The manager already translates everything below it
// into WorkspaceError codes (host/workspace/errors.ts); this adds what only HTTP has
// (authentication, request validation, body limits) and never shows a stack trace.
import { WorkspaceError, type WorkspaceErrorCode } from "../workspace/errors.js";

export type ApiErrorCode =
  | "invalid_argument"
  | "not_found"
  | "conflict"
  | "unauthenticated"
  | "permission_denied"
  | "payload_too_large"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "internal";

export const STATUS_OF: Record<ApiErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  resource_exhausted: 429,
  internal: 500,
  unavailable: 503,
  deadline_exceeded: 504,
};

export class ApiError extends Error {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ApiError";
  }
  get status(): number {
    return STATUS_OF[this.code];
  }
}

const FROM_WORKSPACE: Record<WorkspaceErrorCode, ApiErrorCode> = {
  invalid_argument: "invalid_argument",
  not_found: "not_found",
  conflict: "conflict",
  permission_denied: "permission_denied",
  payload_too_large: "payload_too_large",
  resource_exhausted: "resource_exhausted",
  unavailable: "unavailable",
  deadline_exceeded: "deadline_exceeded",
  // The caller went away: nobody reads the answer; say so in the log.
  cancelled: "unavailable",
  internal: "internal",
};

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  validation?: unknown;
  message?: unknown;
}

/** Any error → the API error to answer with; internal errors keep a generic message. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof WorkspaceError) {
    const code = FROM_WORKSPACE[err.code];
    return new ApiError(code, code === "internal" ? "internal error (see the server log)" : err.message, { cause: err });
  }
  const e = (typeof err === "object" && err !== null ? err : {}) as FastifyLikeError;
  const message = typeof e.message === "string" ? e.message : String(err);
  if (e.validation !== undefined) return new ApiError("invalid_argument", message, { cause: err });
  switch (e.code) {
    case "FST_ERR_CTP_BODY_TOO_LARGE":
    case "FST_REQ_FILE_TOO_LARGE":
    case "FST_FILES_LIMIT":
    case "FST_PARTS_LIMIT":
    case "FST_FIELDS_LIMIT":
      return new ApiError("payload_too_large", message, { cause: err });
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
    case "FST_INVALID_MULTIPART_CONTENT_TYPE":
    case "FST_ERR_CTP_EMPTY_TYPE":
      return new ApiError("invalid_argument", message, { cause: err });
  }
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new ApiError(e.statusCode === 413 ? "payload_too_large" : e.statusCode === 404 ? "not_found" : "invalid_argument", message, { cause: err });
  }
  return new ApiError("internal", "internal error (see the server log)", { cause: err });
}

export function errorBody(err: ApiError): { error: { code: ApiErrorCode; message: string } } {
  return { error: { code: err.code, message: err.message } };
}
