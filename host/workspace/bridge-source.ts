// Where the manager gets a bridge client for a bot: the project's pool
// (host/bridge/pool.ts) by default; tests may pass another source.
import type { BridgeClient } from "../bridge/client.js";

export { targetAddress, type BridgeTarget } from "../bridge/pool.js";

export interface BridgeClientSource {
  get(botId: string): Promise<BridgeClient>;
  /** Drops (and closes) the bot's client; the next get() connects anew. */
  evict(botId: string): void;
  close?(): void | Promise<void>;
}
