// Server-sent events on a hijacked reply: `event: <name>` / `data: <json>` frames, a
// comment line as keepalive, and a client that stops reading for too long is cut off
// (what it was watching runs on).
import type { FastifyReply } from "fastify";

export class SseStream {
  private closed = false;
  private readonly keepalive: NodeJS.Timeout;

  constructor(
    private readonly reply: FastifyReply,
    private readonly idleMs: number,
  ) {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    res.on("close", () => this.close());
    this.keepalive = setInterval(() => this.write(": keepalive\n\n"), 15_000);
    this.keepalive.unref();
  }

  get open(): boolean {
    return !this.closed;
  }

  send(event: string, data: unknown): void {
    this.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (this.closed) return;
    this.close();
    this.reply.raw.end();
  }

  private write(text: string): void {
    if (this.closed) return;
    const res = this.reply.raw;
    if (!res.write(text) && res.writableLength > 1024 * 1024) {
      // The client does not read: give it idleMs to catch up, then cut it off.
      const timer = setTimeout(() => res.destroy(), this.idleMs);
      timer.unref();
      res.once("drain", () => clearTimeout(timer));
    }
  }

  private close(): void {
    this.closed = true;
    clearInterval(this.keepalive);
  }
}
