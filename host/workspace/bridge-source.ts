// Where the manager gets a bridge client for a bot. The project's pool
// (host/bridge/pool.ts) fits this shape; SimpleBridgeSource is a minimal stand-in
// with one cached client per bot and the target decided by a callback.
import { BridgeClient } from "../bridge/client.js";
import { MAX_MESSAGE_BYTES } from "../../proto/rpc.js";

export type BridgeTarget = { kind: "unix"; socketPath: string } | { kind: "tcp"; host: string; port: number };

export interface BridgeClientSource {
  get(botId: string): Promise<BridgeClient>;
  /** Drops (and closes) the bot's client; the next get() connects anew. */
  evict(botId: string): void;
  close?(): void | Promise<void>;
}

export function targetAddress(t: BridgeTarget): string {
  return t.kind === "unix" ? `unix:${t.socketPath}` : `${t.host}:${t.port}`;
}

export class SimpleBridgeSource implements BridgeClientSource {
  private readonly clients = new Map<string, { address: string; client: BridgeClient }>();

  constructor(
    private readonly resolveTarget: (botId: string) => Promise<BridgeTarget>,
    private readonly defaultTimeoutMs = 30_000,
  ) {}

  async get(botId: string): Promise<BridgeClient> {
    const address = targetAddress(await this.resolveTarget(botId));
    // Re-read after the await: a concurrent get() may have connected meanwhile.
    const cached = this.clients.get(botId);
    if (cached !== undefined && cached.address === address) return cached.client;
    if (cached !== undefined) cached.client.close();
    const client = new BridgeClient(address, {
      defaultTimeoutMs: this.defaultTimeoutMs,
      channelOptions: {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        // Closing the client then really ends its connection attempts (a shared
        // subchannel kept dialling a deleted legacy container's IP for minutes).
        "grpc.use_local_subchannel_pool": 1,
      },
    });
    this.clients.set(botId, { address, client });
    return client;
  }

  evict(botId: string): void {
    const cached = this.clients.get(botId);
    if (cached === undefined) return;
    this.clients.delete(botId);
    cached.client.close();
  }

  close(): void {
    for (const botId of [...this.clients.keys()]) this.evict(botId);
  }
}
