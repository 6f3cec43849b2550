// Writes a Web-standard Response (what the SDK's HTTP transport answers with) to a
// Node response, streaming its body with backpressure: while the client does not
// read, `blocked` is reported so the producer can stop, and nothing more is pulled.
// A client that reads nothing for `stallMs` is cut off, so it cannot hold the
// producer stopped for ever.
import type { ServerResponse } from "node:http";

export interface WriteHooks {
  /** The client stopped reading (the socket's buffer is full). */
  blocked?(): void;
  /** It reads again. */
  drained?(): void;
  /** Cut the client off after this long without reading (default: never). */
  stallMs?: number;
}

function waitDrainOrClose(res: ServerResponse, stallMs: number | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = stallMs === undefined ? undefined : setTimeout(() => res.destroy(), stallMs);
    const done = () => {
      clearTimeout(timer);
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/** Resolves when the body has been written, or the client went away (the body is then cancelled). */
export async function writeWebResponse(res: ServerResponse, response: Response, hooks: WriteHooks = {}): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  const onClose = () => {
    reader.cancel().catch(() => undefined);
  };
  res.on("close", onClose);
  // Event streams: headers out at once, so the client sees the stream open before the first event.
  res.flushHeaders();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || res.destroyed) break;
      if (!res.write(value)) {
        hooks.blocked?.();
        await waitDrainOrClose(res, hooks.stallMs);
        hooks.drained?.();
      }
    }
  } catch {
    // The body failed (the transport closed it): end what was sent.
  } finally {
    res.off("close", onClose);
    if (!res.destroyed && !res.writableEnded) res.end();
    if (res.destroyed) reader.cancel().catch(() => undefined);
  }
}
