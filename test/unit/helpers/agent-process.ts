// A real agent process (agent/main.ts under tsx), started with an environment
// of the test's choosing as the host would set it, on a temp socket.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { RpcClient } from "../../../proto/rpc.js";

const repo = path.resolve(import.meta.dirname, "../../..");

export interface AgentProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly socketPath: string;
  readonly dataDir: string;
  /** Temp dir holding the default socket and data dir; removed by stop(). */
  readonly root: string;
  readonly client: RpcClient;
  /** What the agent wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, then SIGKILL when it does not exit within 5 s; removes root. */
  stop(): Promise<void>;
}

export interface AgentProcessOptions {
  /** Variables besides PATH, HOME, BRIDGE_SOCKET_PATH and BRIDGE_DATA_DIR. */
  env?: Record<string, string>;
  socketPath?: string;
  dataDir?: string;
  /** Node options before the agent's entry point (e.g. another --import). */
  nodeArgs?: string[];
}

/** The environment the host gives the agent: nothing of the test runner's own. */
function hostEnv(socketPath: string, dataDir: string, extra: Record<string, string>): Record<string, string> {
  return {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
    BRIDGE_SOCKET_PATH: socketPath,
    BRIDGE_DATA_DIR: dataDir,
    BRIDGE_SHUTDOWN_GRACE_MS: "500",
    ...extra,
  };
}

async function waitForSocket(socketPath: string, child: ChildProcess, stderr: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the agent exited (${child.exitCode ?? child.signalCode}) before serving: ${stderr()}`);
    }
    const st = await fs.lstat(socketPath).catch(() => undefined);
    if (st?.isSocket()) return;
    if (Date.now() > deadline) throw new Error(`no socket at ${socketPath} within ${timeoutMs} ms: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startAgentProcess(opts: AgentProcessOptions = {}): Promise<AgentProcess> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-agent-proc-"));
  const socketPath = opts.socketPath ?? path.join(root, "run", "bridge.sock");
  const dataDir = opts.dataDir ?? path.join(root, "data");
  const child = spawn(process.execPath, ["--import", "tsx", ...(opts.nodeArgs ?? []), path.join(repo, "agent", "main.ts")], {
    cwd: repo,
    env: hostEnv(socketPath, dataDir, opts.env ?? {}),
    stdio: ["ignore", "ignore", "pipe"],
  });
  let errText = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => (errText += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stderr = () => errText;
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
  };
  try {
    await waitForSocket(socketPath, child, stderr);
  } catch (err) {
    await kill();
    await fs.rm(root, { recursive: true, force: true });
    throw err;
  }
  const client = new RpcClient(`unix:${socketPath}`);
  await client.waitForReady(10_000);
  return {
    child,
    pid: child.pid!,
    socketPath,
    dataDir,
    root,
    client,
    stderr,
    async stop() {
      client.close();
      await kill();
      await fs.rm(root, { recursive: true, force: true });
    },
  };
}
