// Bridge agent entry point: runs inside every workspace container as
// `tini -g -- /opt/memoh/bin/node /opt/memoh/agent.js`.
import { startAgent } from "./server.js";

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} memoh-agent: ${message}\n`);
}

async function main(): Promise<void> {
  const dataDir = process.env.BRIDGE_DATA_DIR || "/data";
  const tcpAddr = process.env.BRIDGE_TCP_ADDR || undefined;
  const socketPath = process.env.BRIDGE_SOCKET_PATH || "/run/memoh/bridge.sock";
  const agent = await startAgent({ dataDir, tcpAddr, socketPath });
  log(`serving on ${agent.ctx.listen} (data dir ${agent.ctx.dataDir}, pid ${process.pid})`);

  const graceMs = Number(process.env.BRIDGE_SHUTDOWN_GRACE_MS) || 5000;
  const stop = (signal: string) => {
    log(`${signal}: draining in-flight calls`);
    agent.shutdown(graceMs).then(
      () => process.exit(0),
      (err: unknown) => {
        log(`shutdown failed: ${String(err)}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
  // An error escaping a stream handler must not take the workspace's only door down.
  process.on("uncaughtException", (err) => log(`uncaught exception: ${err.stack ?? String(err)}`));
  process.on("unhandledRejection", (err) => log(`unhandled rejection: ${String(err)}`));
}

main().catch((err: unknown) => {
  log(`failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
