// `memoh-workspace serve`: one process with the workspace manager, its supervisor and
// maintenance, and the HTTP API on MEMOH_LISTEN. SIGTERM/SIGINT stop the server and
// the manager, not the workspaces (containerd's shims keep them running).
import fs from "node:fs";
import pino from "pino";
import { ContainerdError } from "../containerd/errors.js";
import { startManagerLoops, startManagerProcess, type ManagerProcessOptions } from "../workspace/main.js";
import { describeError } from "../workspace/errors.js";
import { ApiAuth } from "./auth.js";
import { ApiMetrics } from "./metrics.js";
import { buildApiServer, type ApiApp } from "./server.js";

export interface ServeOptions extends ManagerProcessOptions {
  /** pino options or false; default JSON lines on stdout at info. */
  logger?: boolean | Record<string, unknown>;
  /** Where the first-start message goes (default stderr). */
  print?: (line: string) => void;
}

export interface RunningServer {
  url: string;
  app: ApiApp;
  /** The admin token generated at this start (first start only), else undefined. */
  generatedAdminToken: string | undefined;
  adminTokenFile: string | undefined;
  close(): Promise<void>;
}

export async function serve(opts: ServeOptions = {}): Promise<RunningServer> {
  const logStream = pino.destination({ dest: 1, sync: false });
  let countWorkspaces: () => Promise<Record<string, number>> = async () => ({});
  const metrics = new ApiMetrics(() => countWorkspaces());
  const proc = await startManagerProcess({
    ...opts,
    hooks: {
      onBridgeCall: (rpc, seconds, ok) => metrics.observeBridgeCall(rpc, seconds, ok),
      onPullProgress: (_bot, digest, offset, total) => metrics.observePullProgress(digest, offset, total),
    },
  });
  countWorkspaces = async () => {
    const counts: Record<string, number> = {};
    for (const row of await proc.store.listContainers()) counts[row.status] = (counts[row.status] ?? 0) + 1;
    return counts;
  };
  let loops: ReturnType<typeof startManagerLoops> | undefined;
  let app: ApiApp | undefined;
  try {
    const cfg = proc.config;
    const auth = new ApiAuth(proc.store.tokens, cfg.adminToken);
    const admin = await auth.ensureAdminToken(cfg.dataRoot);
    app = await buildApiServer({
      manager: proc.manager,
      auth,
      metrics,
      snapshotter: cfg.snapshotter,
      uploadMaxBytes: cfg.uploadMaxBytes,
      tools: { sessionIdleMs: cfg.mcpSessionIdleMs, allowedHostnames: cfg.mcpAllowedHosts },
      mcpStdioIdleMs: cfg.mcpStdioIdleMs,
      // Asynchronous writes: a blocking write per request line costs the request path.
      logger: opts.logger ?? { level: "info", stream: logStream },
      readiness: async () => ({
        containerd: await proc.containerd.ready(2_000).then(
          () => undefined,
          (err: unknown) => (err instanceof ContainerdError ? err.message : describeError(err)),
        ),
        database: await proc.store.db.query("SELECT 1").then(
          () => undefined,
          (err: unknown) => `database does not answer: ${describeError(err)}`,
        ),
      }),
    });
    const address = await app.listen({ host: cfg.listen.host, port: cfg.listen.port });
    loops = startManagerLoops(proc, (event, data) => app!.log.info({ event, ...data }, event));
    const url = address.replace("[::1]", "localhost");
    const print = opts.print ?? ((line: string) => process.stderr.write(`${line}\n`));
    if (admin.generated !== undefined) {
      print(`memoh-workspace: generated the admin token (shown once; also in ${admin.file}, readable by root only):`);
      print(`  ${admin.generated}`);
    }
    return {
      url,
      app,
      generatedAdminToken: admin.generated,
      adminTokenFile: admin.file ?? (fs.existsSync(`${cfg.dataRoot}/admin-token`) ? `${cfg.dataRoot}/admin-token` : undefined),
      async close() {
        await app!.close();
        await loops?.close();
        await proc.close();
        logStream.flushSync();
      },
    };
  } catch (err) {
    await app?.close().catch(() => undefined);
    await loops?.close().catch(() => undefined);
    await proc.close();
    throw err;
  }
}
