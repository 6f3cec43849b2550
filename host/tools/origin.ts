// DNS-rebinding protection for the gateway. A web page on a foreign site can make a
// browser send requests to a server on the user's machine, under the attacker's host
// name (rebinding it to 127.0.0.1) or with the page's Origin. So:
//  - Host must be a loopback name, an IP literal (a browser that was pointed at an
//    address directly is same-origin with it, no rebinding), or a configured name;
//  - Origin, when present, must be a loopback name, the Host's own name, or a
//    configured name. Non-browser clients send no Origin.

const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

function hostnameOf(hostHeader: string): string | undefined {
  try {
    const u = new URL(`http://${hostHeader}`);
    if (u.username !== "" || u.password !== "" || u.pathname !== "/" || u.search !== "" || `${u.host}` === "") return undefined;
    return u.hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

function isIpLiteral(hostname: string): boolean {
  if (hostname.startsWith("[") && hostname.endsWith("]")) return true;
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(hostname);
}

function isLoopbackName(hostname: string): boolean {
  return LOOPBACK_NAMES.has(hostname) || hostname.endsWith(".localhost");
}

export interface OriginPolicy {
  /** Host names (no port) allowed besides loopback names and IP literals, e.g. a reverse proxy's name. */
  allowedHostnames: string[];
}

/** Why the request must be refused (a sentence), or undefined when its Host and Origin are acceptable. */
export function hostOrOriginProblem(host: string | null, origin: string | null, policy: OriginPolicy): string | undefined {
  const extra = new Set(policy.allowedHostnames.map((h) => h.toLowerCase()));
  if (host === null || host === "") return "the request has no Host header";
  const hostname = hostnameOf(host);
  if (hostname === undefined) return `the Host header ${JSON.stringify(host)} is not a host name`;
  if (!isLoopbackName(hostname) && !isIpLiteral(hostname) && !extra.has(hostname)) {
    return `the host name ${hostname} is not allowed (DNS-rebinding protection): use a loopback address, an IP address, or a configured name`;
  }
  if (origin === null || origin === "") return undefined;
  let originHost: string;
  try {
    const u = new URL(origin);
    if (u.origin === "null") return `the Origin ${JSON.stringify(origin)} is not allowed`;
    originHost = u.hostname.toLowerCase();
  } catch {
    return `the Origin header ${JSON.stringify(origin)} is not an origin`;
  }
  if (isLoopbackName(originHost) || originHost === hostname || extra.has(originHost)) return undefined;
  return `requests from the origin ${origin} are not allowed (DNS-rebinding and cross-site protection)`;
}

/** The 403 answer: a JSON-RPC error, as MCP clients expect from this endpoint. */
export function forbiddenResponse(message: string): Response {
  return Response.json({ jsonrpc: "2.0", error: { code: -32000, message: `Forbidden: ${message}` }, id: null }, { status: 403 });
}
