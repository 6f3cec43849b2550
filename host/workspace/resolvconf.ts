// Which file the workspace sees as /etc/resolv.conf (mounted read-only).
// - the host's, when it names a usable (non-loopback) nameserver;
// - systemd-resolved's upstream list when the host's points at the 127.0.0.53 stub
//   (unreachable from the container's own network namespace);
// - otherwise a fallback written under the data root, mode 0644 so any uid in the
//   container can read it.
import fs from "node:fs";
import path from "node:path";

export const HOST_RESOLV_CONF = "/etc/resolv.conf";
export const SYSTEMD_UPSTREAM_RESOLV_CONF = "/run/systemd/resolve/resolv.conf";
export const FALLBACK_RESOLV_CONF = "# written by memoh-workspace: the host has no usable resolv.conf\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";

function nameservers(text: string): string[] {
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1]!);
}

const isLoopback = (ns: string) => ns.startsWith("127.") || ns === "::1";

function usable(file: string): boolean {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return false;
  }
  const servers = nameservers(text);
  return servers.length > 0 && servers.some((ns) => !isLoopback(ns));
}

export interface ResolvConfChoice {
  source: string;
  kind: "host" | "systemd-resolved" | "fallback";
}

export function chooseResolvConf(dataRoot: string, candidates = { host: HOST_RESOLV_CONF, upstream: SYSTEMD_UPSTREAM_RESOLV_CONF }): ResolvConfChoice {
  if (usable(candidates.host)) return { source: candidates.host, kind: "host" };
  if (usable(candidates.upstream)) return { source: candidates.upstream, kind: "systemd-resolved" };
  const fallback = path.join(dataRoot, "resolv.conf");
  fs.mkdirSync(dataRoot, { recursive: true });
  fs.writeFileSync(fallback, FALLBACK_RESOLV_CONF, { mode: 0o644 });
  fs.chmodSync(fallback, 0o644);
  return { source: fallback, kind: "fallback" };
}
