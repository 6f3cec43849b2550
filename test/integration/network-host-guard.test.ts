// Workspaces started by the manager (the real workspace spec, real CNI plugins in this
// machine's network namespace, the fixture's own bridge and /24) cannot open connections to a
// service the host runs on all its addresses: not over IPv4 through the bridge gateway, not
// over IPv6 link-local to the bridge (the workspace's interface has no IPv6). With the host
// guard switched off the IPv4 path works (control). The only traffic is from the test's
// workspace to a listener this file starts on a free port, and to the workspace's loopback.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { WorkspaceNetwork } from "../../host/network/network.js";
import { guardChainNames } from "../../host/network/guards.js";
import { runTool } from "../../host/network/links.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { startWorkspaceFixture, type WorkspaceFixture } from "./env/workspace.js";

let fx: WorkspaceFixture;
let mgr: WorkspaceManager;
let server: Server;
let port = 0;
let closed = false;

before(async () => {
  fx = await startWorkspaceFixture({ embeddedStore: true });
  mgr = fx.manager();
  // Dual-stack on every address, as sshd or a registry would listen.
  server = createServer((s) => s.end("pong"));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: "::", port: 0, ipv6Only: false }, () => resolve());
  });
  port = (server.address() as { port: number }).port;
});

after(async () => {
  server?.close();
  if (!closed) await fx?.close();
});

/** A TCP connect from inside the workspace: "connected", "timeout" or "error" (no route, refused). */
async function connectFrom(bot: string, host: string): Promise<string> {
  const script =
    `const s=require("net").connect({host:${JSON.stringify(host)},port:${port}});s.setTimeout(1500);` +
    `s.on("data",d=>{if(String(d)==="pong")process.exit(0)});s.on("timeout",()=>process.exit(2));s.on("error",()=>process.exit(3));`;
  const r = await mgr.call(bot, (c) => c.exec({ argv: ["/opt/memoh/bin/node", "-e", script] }, { timeoutMs: 15_000 }));
  const outcome = ({ 0: "connected", 2: "timeout", 3: "error" } as Record<number, string>)[r.code];
  assert.ok(outcome !== undefined, `probe failed to run (${r.code}): ${r.stderr.toString()}`);
  return outcome;
}

async function readInWorkspace(bot: string, file: string): Promise<string> {
  const r = await mgr.call(bot, (c) => c.exec({ argv: ["cat", file] }));
  assert.equal(r.code, 0, `cat ${file}: ${r.stderr.toString()}`);
  return r.stdout.toString().trim();
}

/** The bridge's IPv6 link-local address, if it has one. */
async function bridgeLinkLocal(): Promise<string | undefined> {
  const r = await runTool("ip", ["-j", "-6", "addr", "show", "dev", fx.bridge]);
  const doc = JSON.parse(r.stdout || "[]") as Array<{ addr_info?: Array<{ local?: string; scope?: string }> }>;
  return doc[0]?.addr_info?.find((a) => a.scope === "link")?.local;
}

test("a workspace cannot reach a host service on all addresses, over IPv4 through the gateway nor IPv6 link-local; off (control) it can; teardown removes the guard", async () => {
  const bot = fx.botName("guard");
  const ws = await mgr.ensure(bot);
  assert.equal(ws.task, "running");
  const gateway = `${fx.prefix}.1`;
  const r = await runTool("ip", ["-o", "-4", "addr", "show", "dev", fx.bridge]);
  assert.ok(r.stdout.includes(` ${gateway}/24 `), `the gateway is not the test bridge's address: ${r.stdout}`);

  assert.equal(await connectFrom(bot, gateway), "timeout", "the host's service answered the workspace");
  // IPv6: none on the workspace's interface (so nothing reaches the bridge's fe80:: address),
  // loopback keeps ::1.
  assert.equal(await readInWorkspace(bot, "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"), "1");
  assert.equal(await readInWorkspace(bot, "/proc/sys/net/ipv6/conf/lo/disable_ipv6"), "0");
  const ll = await bridgeLinkLocal();
  if (ll !== undefined) assert.notEqual(await connectFrom(bot, `${ll}%eth0`), "connected", "reached the host over IPv6 link-local");

  // Control: the guard off (what a restart with MEMOH_CNI_BLOCK_HOST=off does at reconcile).
  const open = new WorkspaceNetwork(fx.net.list, { blockHost: false, log: () => {} });
  assert.equal(await open.syncGuards(), true);
  assert.equal(await connectFrom(bot, gateway), "connected", "with the switch off the host's service is reachable");
  assert.equal(await fx.net.syncGuards(), true);
  assert.equal(await connectFrom(bot, gateway), "timeout");

  const names = guardChainNames(fx.net.list.name, fx.bridge);
  assert.ok((await runTool("iptables", ["-w", "5", "-S", "INPUT"])).stdout.includes(`-j ${names.input}`));
  closed = true;
  await fx.close();
  const filter = (await runTool("iptables", ["-w", "5", "-t", "filter", "-S"])).stdout;
  for (const chain of [names.input, names.forward]) assert.ok(!filter.includes(chain), `${chain} left behind after teardown`);
});
