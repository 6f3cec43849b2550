// State shared by every handler of one agent.
import type { ChildProcess } from "node:child_process";
import type { EnvBase } from "./exec/env.js";
import { DEFAULT_CHILD_OOM_SCORE_ADJ } from "./exec/oom.js";
import { WRITE_IDLE_MS } from "./limits.js";

export interface AgentContext {
  /** Where relative paths resolve (BRIDGE_DATA_DIR, default /data). */
  readonly dataDir: string;
  /** "unix:/run/memoh/bridge.sock" or "tcp:0.0.0.0:9090". */
  listen: string;
  readonly startedAt: number;
  /** BRIDGE_WORKSPACE_ID (the container id); "" = unknown, Info then reports the hostname. */
  workspaceId: string;
  /** Where the environment of every spawned process starts (exec/env.ts). */
  childEnv: EnvBase;
  /** oom_score_adj written for every spawned process (exec/oom.ts). */
  childOomScoreAdj: number;
  /** A failure to write it has been logged (once per agent). */
  oomScoreWarned: boolean;
  /** A WriteRaw stream silent for this long is abandoned and its temp file removed. */
  writeIdleMs: number;
  /** Every process group the agent started and that is still alive, killed on shutdown. */
  readonly children: Set<ChildProcess | { pid: number; kill(signal?: string): void }>;
}

export function createContext(dataDir: string): AgentContext {
  return {
    dataDir,
    listen: "",
    startedAt: Date.now(),
    workspaceId: "",
    childEnv: { kind: "inherited" },
    childOomScoreAdj: DEFAULT_CHILD_OOM_SCORE_ADJ,
    oomScoreWarned: false,
    writeIdleMs: WRITE_IDLE_MS,
    children: new Set(),
  };
}
