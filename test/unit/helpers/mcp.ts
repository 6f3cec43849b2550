// Drives McpStdio through the typed client.
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ContainerService,
  type McpStdioExit,
  type McpStdioStartSchema,
} from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { fromServiceError, type RpcClient } from "../../../proto/rpc.js";

export type McpStartInit = MessageInitShape<typeof McpStdioStartSchema>;
export type JsonObject = Record<string, unknown>;

export class McpSession {
  readonly call;
  readonly started: Promise<number>;
  /** Resolves with the exit once the call has ended with OK. */
  readonly done: Promise<McpStdioExit>;
  readonly messages: string[] = [];
  readonly noise: string[] = [];
  private waiters: Array<() => void> = [];

  constructor(client: RpcClient, start: McpStartInit) {
    this.call = client.bidi(ContainerService.method.mcpStdio);
    let exit: McpStdioExit | undefined;
    let resolveStarted!: (pid: number) => void;
    this.started = new Promise((resolve) => (resolveStarted = resolve));
    this.done = new Promise((resolve, reject) => {
      this.call.on("data", (reply) => {
        switch (reply.msg.case) {
          case "started":
            resolveStarted(reply.msg.value.pid);
            break;
          case "message":
            this.messages.push(reply.msg.value);
            break;
          case "stdoutNoise":
            this.noise.push(reply.msg.value);
            break;
          case "exit":
            exit = reply.msg.value;
            break;
        }
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      });
      this.call.on("error", (e) => reject(fromServiceError(e)));
      this.call.on("end", () => (exit ? resolve(exit) : reject(new Error("stream ended without exit"))));
    });
    this.done.catch(() => {});
    this.started.catch(() => {});
    this.call.write({ msg: { case: "start", value: start } });
  }

  /** Sends one message: an object is serialised, a string goes as is. */
  send(message: JsonObject | string): void {
    this.call.write({ msg: { case: "message", value: typeof message === "string" ? message : JSON.stringify(message) } });
  }

  closeStdin(): void {
    this.call.write({ msg: { case: "closeStdin", value: true } });
  }

  /** Waits for a condition on what has arrived so far. */
  async waitFor<T>(probe: () => T | undefined, what: string, timeoutMs = 5000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = probe();
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms; messages: ${this.messages.join(" | ")}; noise: ${this.noise.join(" | ")}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The parsed message whose id is `id` (a response). */
  response(id: unknown, timeoutMs?: number): Promise<JsonObject> {
    return this.waitFor(
      () => this.messages.map((m) => JSON.parse(m) as JsonObject).find((m) => m.id === id),
      `response to id ${JSON.stringify(id)}`,
      timeoutMs,
    );
  }

  /** Sends a request and waits for its response. */
  async request(id: number | string, method: string, params?: JsonObject, timeoutMs?: number): Promise<JsonObject> {
    this.send({ jsonrpc: "2.0", id, method, ...(params ? { params } : {}) });
    return this.response(id, timeoutMs);
  }
}
