// JSON-RPC 2.0 at the McpStdio edge: what counts as a message, and the error
// replies the agent itself gives for client input it will not forward.
//
// Messages are forwarded as the text that arrived, not re-serialised: JSON.parse
// followed by JSON.stringify would change numbers beyond 2^53 and the like. A
// raw CR or LF in valid JSON can only be insignificant whitespace (inside
// strings they must be escaped), so replacing them with spaces makes any valid
// message one line without changing what it means.

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
/** Implementation-defined server error: the server cannot take more input. */
export const STDIN_CLOSED = -32000;

type JsonRpcId = string | number | null;

function isMessageObject(value: unknown): boolean {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== "2.0") return false;
  if (typeof m.method === "string") return true; // request or notification
  return "id" in m && ("result" in m || "error" in m); // response
}

/** A JSON-RPC 2.0 request, notification or response, or a non-empty batch of them. */
export function isJsonRpcMessage(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0 && value.every(isMessageObject);
  return isMessageObject(value);
}

/** Whether a server's stdout line is a JSON-RPC message (else it is log noise). */
export function isJsonRpcLine(line: string): boolean {
  const first = line.trimStart()[0];
  if (first !== "{" && first !== "[") return false;
  try {
    return isJsonRpcMessage(JSON.parse(line));
  } catch {
    return false;
  }
}

function idOf(value: unknown): JsonRpcId {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const id = (value as Record<string, unknown>).id;
  return typeof id === "string" || typeof id === "number" ? id : null;
}

/** An error response from the agent (error.data.source says so), as one line of JSON. */
export function errorReply(id: JsonRpcId, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: "2.0", id, error: { code, message, data: { source: "memoh-agent" } } });
}

export type ClientMessageCheck =
  | { ok: true; /** The message as one "\n"-terminated line. */ line: string; id: JsonRpcId }
  | { ok: false; /** The error response to send back instead. */ reply: string };

export function checkClientMessage(text: string): ClientMessageCheck {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { ok: false, reply: errorReply(null, PARSE_ERROR, `Parse error: ${why}`) };
  }
  if (!isJsonRpcMessage(value)) {
    return {
      ok: false,
      reply: errorReply(
        idOf(value),
        INVALID_REQUEST,
        'Invalid Request: expected a JSON-RPC 2.0 message (an object with "jsonrpc": "2.0" and a method, or a result or error) or a non-empty batch of them',
      ),
    };
  }
  const line = /[\r\n]/.test(text) ? text.replace(/[\r\n]/g, " ") : text;
  return { ok: true, line: `${line}\n`, id: idOf(value) };
}
