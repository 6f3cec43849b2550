// JSON-RPC 2.0 as it crosses the proxy: what a message from the server is (it is
// untrusted text), and the few messages the proxy writes itself.
export type JsonRpcId = string | number;
export type JsonObject = Record<string, unknown>;

export type ServerMessage =
  | { kind: "response"; id: JsonRpcId; message: JsonObject }
  | { kind: "request"; id: JsonRpcId; method: string; message: JsonObject }
  | { kind: "notification"; method: string; message: JsonObject };

/** Implementation-defined server error of the proxy (the JSON-RPC range -32000..-32099). */
export const PROXY_ERROR = -32000;
export const INVALID_REQUEST = -32600;
export const INTERNAL_ERROR = -32603;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function isJsonRpcId(value: unknown): value is JsonRpcId {
  return typeof value === "string" || (typeof value === "number" && Number.isInteger(value));
}

function classify(value: unknown): ServerMessage | undefined {
  if (!isObject(value) || value.jsonrpc !== "2.0") return undefined;
  if (typeof value.method === "string") {
    if (value.id === undefined) return { kind: "notification", method: value.method, message: value };
    return isJsonRpcId(value.id) ? { kind: "request", id: value.id, method: value.method, message: value } : undefined;
  }
  if (isJsonRpcId(value.id) && ("result" in value || "error" in value)) return { kind: "response", id: value.id, message: value };
  return undefined;
}

/** The messages of one line the server wrote (a message or a batch); what is not JSON-RPC is left out. */
export function parseServerLine(text: string): ServerMessage[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return [];
  }
  const items = Array.isArray(value) ? value : [value];
  return items.map(classify).filter((m): m is ServerMessage => m !== undefined);
}

export function errorResponse(id: JsonRpcId, code: number, message: string, data?: unknown): JsonObject {
  return { jsonrpc: "2.0", id, error: { code, message, ...(data !== undefined ? { data } : {}) } };
}

/** `params._meta.progressToken` of a request, when it asks for progress. */
export function progressTokenOf(message: JsonObject): JsonRpcId | undefined {
  const params = message.params;
  if (!isObject(params) || !isObject(params._meta)) return undefined;
  const token = params._meta.progressToken;
  return isJsonRpcId(token) ? token : undefined;
}

/** `params.<key>` when it is a request id (requestId of notifications/cancelled). */
export function requestIdParam(message: JsonObject, key: string): JsonRpcId | undefined {
  const params = message.params;
  if (!isObject(params)) return undefined;
  const id = params[key];
  return isJsonRpcId(id) ? id : undefined;
}

/** `params.progressToken` of notifications/progress. */
export function progressTokenParam(message: JsonObject): JsonRpcId | undefined {
  return requestIdParam(message, "progressToken");
}

export function withParam(message: JsonObject, key: string, value: unknown): JsonObject {
  return { ...message, params: { ...(isObject(message.params) ? message.params : {}), [key]: value } };
}

export function resultOf(message: JsonObject): JsonObject | undefined {
  return isObject(message.result) ? message.result : undefined;
}

export function errorOf(message: JsonObject): { code: number; message: string } | undefined {
  const e = message.error;
  if (!isObject(e)) return undefined;
  return { code: typeof e.code === "number" ? e.code : INTERNAL_ERROR, message: typeof e.message === "string" ? e.message : "(no message)" };
}

export { isObject };
