// Prometheus metrics of the orchestrator (prom-client, one registry per server):
// request latency by route, bridge latency by RPC, workspaces by status, bytes pulled,
// bytes downloaded by way of reading, tool-call latency and errors by tool.
import client from "prom-client";

export class ApiMetrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Histogram<"method" | "route" | "status">;
  private readonly bridge: client.Histogram<"rpc" | "outcome">;
  private readonly pulled: client.Counter;
  private readonly downloaded: client.Counter<"via">;
  private readonly toolCalls: client.Histogram<"tool" | "outcome">;
  private readonly toolErrors: client.Counter<"tool">;

  /** `countWorkspaces` is read on every scrape: workspaces by status. */
  constructor(countWorkspaces: () => Promise<Record<string, number>>) {
    this.requests = new client.Histogram({
      name: "memoh_http_request_duration_seconds",
      help: "HTTP request latency by route",
      labelNames: ["method", "route", "status"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    this.bridge = new client.Histogram({
      name: "memoh_bridge_call_duration_seconds",
      help: "Bridge (agent) call latency by RPC",
      labelNames: ["rpc", "outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    this.toolCalls = new client.Histogram({
      name: "memoh_tool_call_duration_seconds",
      help: "MCP tool gateway: tool call latency by tool and outcome (error: the result was an error)",
      labelNames: ["tool", "outcome"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120, 600],
      registers: [this.registry],
    });
    this.toolErrors = new client.Counter({ name: "memoh_tool_call_errors_total", help: "MCP tool gateway: tool calls that ended in an error, by tool", labelNames: ["tool"], registers: [this.registry] });
    this.pulled = new client.Counter({ name: "memoh_image_bytes_pulled_total", help: "Image bytes pulled from registries", registers: [this.registry] });
    this.downloaded = new client.Counter({
      name: "memoh_download_bytes_total",
      help: "Bytes sent by fs/download, by how they were read: handoff (the server read the agent's open file) or stream (through ReadRaw)",
      labelNames: ["via"],
      registers: [this.registry],
    });
    new client.Gauge({
      name: "memoh_workspaces",
      help: "Workspaces by status",
      labelNames: ["status"],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const [status, n] of Object.entries(await countWorkspaces())) this.set({ status }, n);
      },
    });
    client.collectDefaultMetrics({ register: this.registry, prefix: "memoh_process_" });
  }

  observeRequest(method: string, route: string, status: number, seconds: number): void {
    this.requests.observe({ method, route, status: String(status) }, seconds);
  }

  observeBridgeCall(rpc: string, seconds: number, ok: boolean): void {
    this.bridge.observe({ rpc, outcome: ok ? "ok" : "error" }, seconds);
  }

  observeToolCall(tool: string, seconds: number, outcome: "ok" | "error"): void {
    this.toolCalls.observe({ tool, outcome }, seconds);
    if (outcome === "error") this.toolErrors.inc({ tool });
  }

  observeDownload(via: "handoff" | "stream", bytes: number): void {
    this.downloaded.inc({ via }, bytes);
  }

  /** Progress callbacks report a blob's offset: count only what is new. */
  private readonly pullOffsets = new Map<string, number>();
  observePullProgress(digest: string, offset: number, total: number): void {
    const seen = this.pullOffsets.get(digest) ?? 0;
    if (offset > seen) this.pulled.inc(offset - seen);
    if (offset >= total) this.pullOffsets.delete(digest);
    else this.pullOffsets.set(digest, offset);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
