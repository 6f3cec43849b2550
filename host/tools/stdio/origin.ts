// DNS-rebinding and cross-site protection of the MCP endpoints. A web page on a
// foreign site can make a browser send requests to a server on the user's machine,
// under the attacker's host name (rebound to 127.0.0.1) or with the page's Origin.
//  - Host must be a loopback name, an IP literal (a browser pointed at an address is
//    same-origin with it: nothing was rebound), or a name the operator allowed;
//  - Origin, when present, must be a loopback name, the Host's own name, or an
//    allowed name. Non-browser clients send no Origin.
const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

function hostnameOf(hostHeader: string): string | undefined {
  try {
    const u = new URL(`http://${hostHeader}`);
    if (u.username !== "" || u.password !== "" || u.pathname !== "/" || u.search !== "" || u.hash !== "" || u.host === "") return undefined;
    return u.hostname.toLowerCase();
  } catch {
    return undefined;
  }
}

function isIpLiteral(hostname: string): boolean {
  return (hostname.startsWith("[") && hostname.endsWith("]")) || /^\d{1,3}(\.\d{1,3}){3}$/.test(hostname);
}

function isLoopbackName(hostname: string): boolean {
  return LOOPBACK_NAMES.has(hostname) || hostname.endsWith(".localhost");
}

/** Why the request must be refused (a sentence), or undefined when Host and Origin are acceptable. */
export function hostOrOriginProblem(host: string | undefined, origin: string | undefined, allowedHostnames: readonly string[] = []): string | undefined {
  const allowed = new Set(allowedHostnames.map((h) => h.toLowerCase()));
  if (host === undefined || host === "") return "the request has no Host header";
  const hostname = hostnameOf(host);
  if (hostname === undefined) return `the Host header ${JSON.stringify(host)} is not a host name`;
  if (!isLoopbackName(hostname) && !isIpLiteral(hostname) && !allowed.has(hostname)) {
    return `the host name ${hostname} is not allowed (DNS-rebinding protection): use a loopback address, an IP address or an allowed name`;
  }
  if (origin === undefined || origin === "") return undefined;
  let originHost: string;
  try {
    const u = new URL(origin);
    if (u.origin === "null") return `the Origin ${JSON.stringify(origin)} is not allowed`;
    originHost = u.hostname.toLowerCase();
  } catch {
    return `the Origin header ${JSON.stringify(origin)} is not an origin`;
  }
  if (isLoopbackName(originHost) || originHost === hostname || allowed.has(originHost)) return undefined;
  return `requests from the origin ${origin} are not allowed (DNS-rebinding and cross-site protection)`;
}
