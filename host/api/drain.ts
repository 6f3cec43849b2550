// Backpressure toward an HTTP client: streamed answers (downloads, archives, exec
// output) wait for the client to read before taking more from the workspace, so a
// client that stops reading holds at most a bounded buffer here, and one that reads
// nothing for the idle time is cut off (the bridge stream behind it then ends).
import type { ServerResponse } from "node:http";
import { ApiError } from "./errors.js";

/** Bytes a streamed answer may queue in the response before it waits for the client. */
export const RESPONSE_BUFFER_BYTES = 1024 * 1024;

/**
 * Resolves when `res` drained; rejects, and destroys the response, when the client read
 * nothing for `idleMs`; rejects when the connection closed. Leaves no listener behind.
 */
export function waitDrain(res: ServerResponse, idleMs: number): Promise<void> {
  if (res.destroyed) return Promise.reject(new ApiError("unavailable", "the client went away"));
  return new Promise((resolve, reject) => {
    const settle = () => {
      clearTimeout(timer);
      res.off("drain", drained);
      res.off("close", closed);
    };
    const drained = () => {
      settle();
      resolve();
    };
    const closed = () => {
      settle();
      reject(new ApiError("unavailable", "the client went away"));
    };
    const timer = setTimeout(() => {
      settle();
      res.destroy();
      reject(new ApiError("deadline_exceeded", `the client read nothing for ${idleMs} ms`));
    }, idleMs);
    res.on("drain", drained);
    res.on("close", closed);
  });
}

/**
 * Writes `chunk` (`written` is called once the socket took it: its buffer may be used
 * again); when the response holds more than RESPONSE_BUFFER_BYTES, a promise of its drain.
 */
export function writeWithBackpressure(res: ServerResponse, chunk: string | Uint8Array, idleMs: number, written?: () => void): Promise<void> | undefined {
  if (res.destroyed) return Promise.reject(new ApiError("unavailable", "the client went away"));
  if (written) res.write(chunk, written);
  else res.write(chunk);
  return res.writableLength > RESPONSE_BUFFER_BYTES ? waitDrain(res, idleMs) : undefined;
}
