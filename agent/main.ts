// Bridge agent entry point: runs inside every workspace container as
// `tini -g -- /opt/memoh/bin/node /opt/memoh/agent.js`.
//
// Its environment is the host's, not the image's: PATH, HOME, the BRIDGE_*
// settings, and BRIDGE_IMAGE_ENV carrying the image's ENV for the processes
// it spawns (exec/env.ts).
import { parseImageEnv } from "./exec/env.js";
import { parseOomScoreAdj } from "./exec/oom.js";
import { logLine as log } from "./log.js";
import { startAgent } from "./server.js";

async function main(): Promise<void> {
  const dataDir = process.env.BRIDGE_DATA_DIR || "/data";
  const tcpAddr = process.env.BRIDGE_TCP_ADDR || undefined;
  const socketPath = process.env.BRIDGE_SOCKET_PATH || "/run/memoh/bridge.sock";
  const workspaceId = process.env.BRIDGE_WORKSPACE_ID || undefined;

  let imageEnv: Record<string, string> | undefined;
  const rawImageEnv = process.env.BRIDGE_IMAGE_ENV;
  if (rawImageEnv !== undefined) {
    const parsed = parseImageEnv(rawImageEnv);
    if (parsed.problem) log(parsed.problem);
    imageEnv = parsed.vars;
  }
  const oom = parseOomScoreAdj(process.env.BRIDGE_CHILD_OOM_SCORE_ADJ);
  if (oom.problem) log(oom.problem);

  const agent = await startAgent({ dataDir, tcpAddr, socketPath, workspaceId, imageEnv, childOomScoreAdj: oom.value });
  log(
    `serving on ${agent.ctx.listen} (data dir ${agent.ctx.dataDir}, pid ${process.pid}, workspace ${workspaceId ?? "unnamed"}, ` +
      `${imageEnv ? `image environment of ${Object.keys(imageEnv).length} variables` : "no image environment: children inherit the agent's"})`,
  );

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
