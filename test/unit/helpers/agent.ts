// An in-process bridge agent on a temp socket and data dir, with a client.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { RpcClient } from "../../../proto/rpc.js";
import { startAgent, type RunningAgent } from "../../../agent/server.js";
import { DEFAULT_JOBS_CONFIG, type JobsConfig } from "../../../agent/jobs/config.js";
import { jobsOf } from "../../../agent/jobs/rpc.js";

export interface TestAgent {
  agent: RunningAgent;
  client: RpcClient;
  /** The agent's data dir (relative paths resolve here). */
  dataDir: string;
  /** Temp dir holding dataDir and the socket; removed by close(). */
  root: string;
  close(): Promise<void>;
}

/** Background jobs keep their output under <root>/jobs (not the agent's default dir on this machine). */
export async function startTestAgent(opts: { tcp?: boolean; writeIdleMs?: number; jobs?: Partial<JobsConfig> } = {}): Promise<TestAgent> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-agent-test-"));
  const dataDir = path.join(root, "data");
  const agent = await startAgent(
    opts.tcp
      ? { dataDir, tcpAddr: "127.0.0.1:0", writeIdleMs: opts.writeIdleMs }
      : { dataDir, socketPath: path.join(root, "run", "bridge.sock"), writeIdleMs: opts.writeIdleMs },
  );
  jobsOf(agent.ctx, { ...DEFAULT_JOBS_CONFIG, dir: path.join(root, "jobs"), ...opts.jobs });
  const client = new RpcClient(agent.target);
  return {
    agent,
    client,
    dataDir,
    root,
    async close() {
      client.close();
      await agent.shutdown(500);
      await fs.rm(root, { recursive: true, force: true });
    },
  };
}
