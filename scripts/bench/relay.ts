// The floor of any HTTP server in front of the agent: a bare node:http server that
// streams ReadRaw into the response (`/?path=`), or answers a ReadFile as JSON
// (`/read?path=`), with nothing else (no framework, auth, manager or logging). It runs
// as its own process, as the API server does, so the benchmark can compare the API
// with the same three-process path (agent → relay → client) on the same cores.
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
  const url = new URL(req.url ?? "/", "http://x");
  const file = url.searchParams.get("path") ?? "";
  if (url.pathname === "/read") {
    // A line window of a text file as JSON, the fields the API's fs/read answers.
    const r = await bridge.readFile({ path: file });
    const body = JSON.stringify({ content: r.content, total_lines: r.totalLines, line_offset: r.lineOffset, line_count: r.lineCount, truncated: r.truncated, binary: r.binary, size: Number(r.size) });
    res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": String(Buffer.byteLength(body)) });
    res.end(body);
    return;
  }
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
