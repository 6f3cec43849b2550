// Pulling one message at a time from a grpc-js request stream.
import type { Readable } from "node:stream";

/** A grpc-js server-side request stream (ServerReadableStream / ServerDuplexStream). */
export interface RequestStream extends Readable {
  readonly cancelled: boolean;
}

/**
 * The next request message, or undefined when the client half-closed. Rejects
 * with `cancelledError()` once the call is cancelled or its stream destroyed,
 * even while messages are still buffered, and with the stream's error if it fails.
 *
 * (An async iterator over the stream is not enough: grpc-js destroys the stream
 * on cancel, and an iterator resumed after that can wait forever.)
 */
export function nextMessage<T>(
  call: RequestStream,
  cancelledError: () => Error,
  idle?: { ms: number; error: () => Error },
): Promise<T | undefined> {
  return new Promise<T | undefined>((resolve, reject) => {
    // A client that vanished without a word (its cancel never reached us) must not
    // hold the call, and whatever it was writing, forever.
    const timer = idle ? setTimeout(() => {
      cleanup();
      reject(idle.error());
    }, idle.ms) : undefined;
    const cleanup = (): void => {
      if (timer) clearTimeout(timer);
      call.off("readable", check);
      call.off("end", onEnd);
      call.off("cancelled", onGone);
      call.off("close", onGone);
      call.off("error", onError);
    };
    function onEnd(): void {
      cleanup();
      resolve(undefined);
    }
    function onGone(): void {
      cleanup();
      reject(cancelledError());
    }
    function onError(err: Error): void {
      cleanup();
      reject(err);
    }
    function check(): void {
      if (call.cancelled || call.destroyed) return onGone();
      const msg = call.read() as T | null;
      if (msg !== null) {
        cleanup();
        resolve(msg);
      } else if (call.readableEnded) {
        onEnd();
      }
    }
    call.on("readable", check);
    call.on("end", onEnd);
    call.on("cancelled", onGone);
    call.on("close", onGone);
    call.on("error", onError);
    check();
  });
}
