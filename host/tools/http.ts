// Node's HTTP request and response as the web-standard Request and Response the MCP
// SDK serves, both ways streamed: an SSE response is written as its events come, the
// request's AbortSignal fires when the client goes away, and a client that stops
// reading holds the stream back instead of filling memory.
import type { IncomingMessage, ServerResponse } from "node:http";

/** A web Request for a Node request whose body (if any) was already read into `body`. */
export function toWebRequest(req: IncomingMessage, body: Buffer | undefined, signal: AbortSignal): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) headers.append(name, v);
    else headers.set(name, value);
  }
  const host = req.headers.host ?? "localhost";
  const url = new URL(req.url ?? "/", `http://${/^[A-Za-z0-9.:[\]-]+$/.test(host) ? host : "localhost"}`);
  const method = req.method ?? "GET";
  const withBody = method !== "GET" && method !== "HEAD" && body !== undefined;
  return new Request(url, { method, headers, signal, ...(withBody ? { body, duplex: "half" } : {}) } as RequestInit);
}

/**
 * Writes a web Response to a Node response and resolves when it has been sent or the
 * client went away (then the body is cancelled, which ends an SSE stream on the server side).
 */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  response.headers.forEach((value, name) => {
    if (name === "set-cookie") headers[name] = response.headers.getSetCookie();
    else headers[name] = value;
  });
  res.writeHead(response.status, response.statusText || undefined, headers);
  if (response.body === null) {
    res.end();
    return;
  }
  // Events must reach the client as they come: no Nagle delay for small frames.
  res.socket?.setNoDelay(true);
  const reader = response.body.getReader();
  let gone = false;
  const onClose = () => {
    gone = true;
    void reader.cancel().catch(() => undefined);
  };
  res.on("close", onClose);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || gone) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          const settle = () => {
            res.off("drain", settle);
            res.off("close", settle);
            resolve();
          };
          res.on("drain", settle);
          res.on("close", settle);
        });
      }
    }
  } catch {
    // The body failed (the server closed the stream): end what was sent.
  } finally {
    res.off("close", onClose);
    if (!res.writableEnded) res.end();
  }
}
