// Runs one WorkspaceNetwork operation in the network namespace it was started in and prints
// the outcome as one JSON line. network-forward.test.ts starts it with
// `ip netns exec <ns> node --import tsx network-op.ts '<request>'`, so the plugins' links and
// iptables rules land in a private namespace that plays the host, never in the machine's.
import path from "node:path";
import { WorkspaceNetwork } from "../../../host/network/network.js";

export interface NetworkOpRequest {
  op: "setup" | "check" | "remove" | "hygiene" | "teardown";
  /** Holds conf/, cache/ and ipam/. */
  dir: string;
  bridge: string;
  subnet: string;
  firewall: boolean;
  /** MEMOH_CNI_BLOCK_HOST / MEMOH_CNI_BLOCK_METADATA (default on). */
  blockHost?: boolean;
  blockMetadata?: boolean;
  containerId?: string;
  netns?: string;
  /** hygiene: the containers that are still running. */
  live?: string[];
}

export type NetworkOpReply = { ok: true; value: unknown } | { ok: false; error: string };

async function run(req: NetworkOpRequest): Promise<unknown> {
  const net = WorkspaceNetwork.open({
    confDir: path.join(req.dir, "conf"),
    cacheDir: path.join(req.dir, "cache"),
    defaults: { bridge: req.bridge, subnet: req.subnet, ipamDataDir: path.join(req.dir, "ipam"), firewall: req.firewall },
    ...(req.blockHost !== undefined ? { blockHost: req.blockHost } : {}),
    ...(req.blockMetadata !== undefined ? { blockMetadata: req.blockMetadata } : {}),
    pluginTimeoutMs: 20_000,
    log: (m) => process.stderr.write(`[network] ${m}\n`),
  });
  const id = (): string => {
    if (req.containerId === undefined) throw new Error(`${req.op} needs containerId`);
    return req.containerId;
  };
  switch (req.op) {
    case "setup": {
      if (req.netns === undefined) throw new Error("setup needs netns");
      const a = await net.setupNetwork(id(), req.netns);
      return { ip: a.ip, gateway: a.gateway, hostInterface: a.hostInterface, plugins: net.list.plugins.map((p) => p.type) };
    }
    case "check":
      if (req.netns === undefined) throw new Error("check needs netns");
      await net.checkNetwork(id(), req.netns);
      return null;
    case "remove":
      await net.removeNetwork(id(), req.netns);
      return null;
    case "hygiene":
      return await net.cleanupStale(req.live ?? []);
    case "teardown":
      await net.removeHostNetworking();
      return null;
  }
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write("usage: network-op.ts '<json request>'\n");
  process.exit(2);
}
let reply: NetworkOpReply;
try {
  reply = { ok: true, value: await run(JSON.parse(arg) as NetworkOpRequest) };
} catch (err) {
  reply = { ok: false, error: err instanceof Error ? err.message : String(err) };
}
process.stdout.write(`${JSON.stringify(reply)}\n`);
