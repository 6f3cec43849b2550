// The floor of any HTTP download served from the agent: a bare node:http server that
// streams ReadRaw into the response with nothing else (no framework, auth, manager or
// logging). It runs as its own process, as the API server does, so the benchmark can
// compare the API's download with the same three-process path (agent → relay → client)
// on the same cores.
//   tsx scripts/bench/relay.ts <socket path> <workspace id>   → prints its port
import http from "node:http";
import { once } from "node:events";
import { checkWorkspace, openBridgeClient, type BridgeTarget } from "../../host/bridge/pool.js";

const [socketPath, workspaceId] = process.argv.slice(2);
if (!socketPath || !workspaceId) throw new Error("usage: relay.ts <socket path> <workspace id>");
const target: BridgeTarget = { kind: "unix", socketPath, workspaceId };
const bridge = openBridgeClient(target, { defaultTimeoutMs: 60_000 });
await checkWorkspace(bridge, target, 5_000);

const server = http.createServer(async (req, res) => {
  const file = new URL(req.url ?? "/", "http://x").searchParams.get("path") ?? "";
  const size = Number((await bridge.stat(file)).info?.size ?? 0);
  res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
  for await (const chunk of bridge.readRaw(file, {}, { timeoutMs: 600_000 })) {
    if (!res.write(chunk) && res.writableLength > 1024 * 1024) await once(res, "drain");
  }
  res.end();
});
server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  process.stdout.write(`${typeof addr === "object" && addr ? addr.port : 0}\n`);
});
