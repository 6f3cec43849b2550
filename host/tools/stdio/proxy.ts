// The MCP stdio servers running in workspaces, per bot: start (with the probe), find,
// list, end; idle connections are closed, and ended ones are remembered for a while so
// a client learns why its server is gone (exit code, stderr tail).
import { randomBytes } from "node:crypto";
import { WorkspaceError } from "../../workspace/errors.js";
import type { StdioChannel, StdioChannelHandlers, StdioServerSpec } from "./channel.js";
import { StdioConnection, type ConnectionInfo } from "./connection.js";
import { ENDED_KEEP_MS, MAX_CONNECTIONS_PER_BOT, MAX_ENDED_PER_BOT } from "./limits.js";

export interface McpStdioProxyOptions {
  /** Starts a server in the bot's workspace (the agent's McpStdio). */
  open(botId: string, spec: StdioServerSpec, handlers: StdioChannelHandlers): Promise<StdioChannel>;
  /** A connection whose client sent nothing for this long, with no request in flight, is closed. */
  idleMs: number;
  now?: () => number;
  log?: (message: string, data?: Record<string, unknown>) => void;
}

export interface StartStdioServer {
  name: string;
  spec: StdioServerSpec;
  /** Bound on spawn + initialize + tools/list. */
  probeTimeoutMs: number;
}

/** Connection ids: 24 hex digits. */
export const CONNECTION_ID_PATTERN = /^[0-9a-f]{24}$/;

export class McpStdioProxy {
  private readonly bots = new Map<string, Map<string, StdioConnection>>();
  private readonly sweeper: NodeJS.Timeout;
  private readonly now: () => number;
  private closing = false;

  constructor(private readonly opts: McpStdioProxyOptions) {
    this.now = opts.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), Math.min(15_000, Math.max(250, Math.floor(opts.idleMs / 4))));
    this.sweeper.unref();
  }

  /** Starts a server and probes it; resolves with the ready connection, or rejects saying why (the server is then stopped). */
  async start(botId: string, req: StartStdioServer): Promise<StdioConnection> {
    if (this.closing) throw new WorkspaceError("unavailable", "the orchestrator is shutting down");
    const connections = this.connectionsOf(botId);
    const live = [...connections.values()].filter((c) => c.state !== "ended").length;
    if (live >= MAX_CONNECTIONS_PER_BOT) {
      throw new WorkspaceError("resource_exhausted", `bot ${botId} already runs ${MAX_CONNECTIONS_PER_BOT} MCP stdio servers; end one first (DELETE /bots/${botId}/mcp-stdio/<connection_id>)`);
    }
    const id = randomBytes(12).toString("hex");
    const connection = new StdioConnection({ id, botId, name: req.name, spec: req.spec, stallMs: this.opts.idleMs, now: this.now, ...(this.opts.log ? { log: this.opts.log } : {}) });
    connections.set(id, connection);
    try {
      await connection.start((handlers) => this.opts.open(botId, req.spec, handlers), req.probeTimeoutMs);
    } catch (err) {
      connections.delete(id);
      this.forgetEmpty(botId);
      throw err;
    }
    if (this.closing) {
      await connection.end({ kind: "shutdown" });
      throw new WorkspaceError("unavailable", "the orchestrator is shutting down");
    }
    return connection;
  }

  get(botId: string, connectionId: string): StdioConnection | undefined {
    return this.bots.get(botId)?.get(connectionId);
  }

  /** The bot's connections, oldest first, ended ones included while they are remembered. */
  list(botId: string): ConnectionInfo[] {
    return [...(this.bots.get(botId)?.values() ?? [])].sort((a, b) => a.createdAt - b.createdAt).map((c) => c.info());
  }

  /** Ends a connection (its server gets EOF, then is killed) and forgets it; undefined when there is none. */
  async end(botId: string, connectionId: string): Promise<ConnectionInfo | undefined> {
    const connection = this.get(botId, connectionId);
    if (connection === undefined) return undefined;
    await connection.end({ kind: "deleted" });
    this.bots.get(botId)?.delete(connectionId);
    this.forgetEmpty(botId);
    return connection.info();
  }

  /** Closes idle connections and forgets ended ones past their time (run periodically). */
  sweep(): void {
    const now = this.now();
    for (const [botId, connections] of this.bots) {
      for (const connection of connections.values()) {
        const since = connection.state === "ready" ? connection.idleSince() : undefined;
        if (since !== undefined && now - since >= this.opts.idleMs) void connection.end({ kind: "idle", idleMs: this.opts.idleMs });
      }
      const ended = [...connections.values()].filter((c) => c.endedAt() !== undefined).sort((a, b) => a.endedAt()! - b.endedAt()!);
      ended.forEach((c, i) => {
        if (now - c.endedAt()! > ENDED_KEEP_MS || i < ended.length - MAX_ENDED_PER_BOT) connections.delete(c.id);
      });
      this.forgetEmpty(botId);
    }
  }

  /** Ends every connection (the orchestrator stops). */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.sweeper);
    const all = [...this.bots.values()].flatMap((m) => [...m.values()]);
    await Promise.all(all.map((c) => c.end({ kind: "shutdown" })));
  }

  private connectionsOf(botId: string): Map<string, StdioConnection> {
    let connections = this.bots.get(botId);
    if (connections === undefined) {
      connections = new Map();
      this.bots.set(botId, connections);
    }
    return connections;
  }

  private forgetEmpty(botId: string): void {
    if (this.bots.get(botId)?.size === 0) this.bots.delete(botId);
  }
}
