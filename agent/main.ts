// Bridge agent entry point: runs inside every workspace container as
// `tini -g -- /opt/memoh/bin/node /opt/memoh/agent.js`.
//
// Its environment is the host's, not the image's: PATH, HOME, the BRIDGE_*
// settings, and BRIDGE_IMAGE_ENV carrying the image's ENV for the processes
// it spawns (exec/env.ts).
import { parseImageEnv } from "./exec/env.js";
import { parseOomScoreAdj } from "./exec/oom.js";
import { killSessions, trackedSessions } from "./exec/children.js";
import { discardAllTempFiles, discardAllTempFilesSync } from "./fs/atomic.js";
import { logLine as log } from "./log.js";
import { startAgent, type RunningAgent } from "./server.js";

/** Set once the agent serves: what a crash must stop before the process exits. */
let started: RunningAgent | undefined;

/**
 * An error nothing caught: the agent's state can no longer be trusted (a stream
 * half handled, a descriptor in an unknown state), so it stops the processes it
 * started, removes its temp files and exits; the supervisor starts a fresh one.
 */
function crash(what: string, err: unknown): never {
  log(`${what}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}; exiting`);
  try {
    if (started) killSessions(trackedSessions(started.ctx));
    discardAllTempFilesSync();
  } finally {
    process.exit(70); // EX_SOFTWARE
  }
}

async function main(): Promise<void> {
  process.on("uncaughtException", (err) => crash("uncaught exception", err));
  process.on("unhandledRejection", (err) => crash("unhandled rejection", err));

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

  const agent = (started = await startAgent({ dataDir, tcpAddr, socketPath, workspaceId, imageEnv, childOomScoreAdj: oom.value }));
  log(
    `serving on ${agent.ctx.listen} (data dir ${agent.ctx.dataDir}, pid ${process.pid}, workspace ${workspaceId ?? "unnamed"}, ` +
      `${imageEnv ? `image environment of ${Object.keys(imageEnv).length} variables` : "no image environment: children inherit the agent's"})`,
  );

  const graceMs = Number(process.env.BRIDGE_SHUTDOWN_GRACE_MS) || 5000;
  const stop = async (signal: string) => {
    log(`${signal}: draining in-flight calls`);
    let code = 0;
    try {
      await agent.shutdown(graceMs);
    } catch (err) {
      log(`shutdown failed: ${String(err)}`);
      code = 1;
    }
    // The calls are gone; the temp files of writes they left unfinished go too.
    await discardAllTempFiles().catch((err: unknown) => log(`removing temp files failed: ${String(err)}`));
    process.exit(code);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
}

main().catch((err: unknown) => {
  log(`failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
