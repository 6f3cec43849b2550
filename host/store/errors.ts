// Store failures with stable codes, translated from the database's errors in one place.
export type StoreErrorCode = "conflict" | "not_found" | "invalid";

/** A store failure with a stable code, so callers ask "conflict?" without matching text. */
export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "StoreError";
  }
}

interface PgErrorFields {
  code?: unknown;
  constraint?: unknown;
  detail?: unknown;
}

/** Turns a database error into a StoreError when it is one callers can act on. */
export function translate(err: unknown, what: string): unknown {
  if (typeof err !== "object" || err === null) return err;
  const e = err as PgErrorFields & Error;
  const detail = typeof e.detail === "string" && e.detail ? ` (${e.detail})` : "";
  const constraint = typeof e.constraint === "string" ? ` [${e.constraint}]` : "";
  switch (e.code) {
    case "23505":
      return new StoreError("conflict", `${what}: already exists${constraint}${detail}`, { cause: err });
    case "23503":
      return new StoreError("not_found", `${what}: refers to a row that does not exist${constraint}${detail}`, { cause: err });
    case "23514":
    case "22P02":
      return new StoreError("invalid", `${what}: ${e.message}${constraint}${detail}`, { cause: err });
    default:
      return err;
  }
}

/** Runs a query, translating the database's error into a StoreError where one applies. */
export async function guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translate(err, what);
  }
}
