// State shared by every handler of one agent.
import type { ChildProcess } from "node:child_process";
import { WRITE_IDLE_MS } from "./limits.js";

export interface AgentContext {
  /** Where relative paths resolve (BRIDGE_DATA_DIR, default /data). */
  readonly dataDir: string;
  /** "unix:/run/memoh/bridge.sock" or "tcp:0.0.0.0:9090". */
  listen: string;
  readonly startedAt: number;
  /** A WriteRaw stream silent for this long is abandoned and its temp file removed. */
  writeIdleMs: number;
  /** Every process group the agent started and that is still alive, killed on shutdown. */
  readonly children: Set<ChildProcess | { pid: number; kill(signal?: string): void }>;
}

export function createContext(dataDir: string): AgentContext {
  return { dataDir, listen: "", startedAt: Date.now(), writeIdleMs: WRITE_IDLE_MS, children: new Set() };
}
