// Hostile load against a real agent process, and what it costs the agent:
// its RSS (current and peak, from /proc), its open fds, and the latencies a
// well-behaved client in a process of its own sees meanwhile.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { ContainerService, ReadFileRequestSchema } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient, Status, fromServiceError, rpcCode } from "../../../proto/rpc.js";

export const MiB = 1024 * 1024;

export interface Memory {
  rss: number;
  /** Peak RSS since start or since the last resetPeak. */
  hwm: number;
}

async function statusKb(pid: number, field: string): Promise<number> {
  const text = await fs.readFile(`/proc/${pid}/status`, "utf8");
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

export async function memoryOf(pid: number): Promise<Memory> {
  return { rss: await statusKb(pid, "VmRSS"), hwm: await statusKb(pid, "VmHWM") };
}

/** Resets the peak RSS (VmHWM) of `pid` to its current RSS (clear_refs 5, Linux ≥ 4.0). */
export async function resetPeak(pid: number): Promise<void> {
  await fs.writeFile(`/proc/${pid}/clear_refs`, "5");
}

export async function fdCount(pid: number): Promise<number> {
  return (await fs.readdir(`/proc/${pid}/fd`)).length;
}

/** Sockets among the open fds of `pid` (its connections and its listener). */
export async function socketCount(pid: number): Promise<number> {
  let n = 0;
  for (const fd of await fs.readdir(`/proc/${pid}/fd`)) {
    const link = await fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    if (link.startsWith("socket:")) n++;
  }
  return n;
}

/**
 * Runs every thread of `pid` (the event loop, libuv's pool, V8's helpers) at a
 * higher priority than everything else on this machine (nice -10, as root), so
 * the latencies measured reflect how the process serves its own load, not the
 * other tests sharing the CPUs. Threads started later keep the nice value of
 * the thread that starts them.
 */
export async function raisePriority(pid: number): Promise<void> {
  for (const tid of await fs.readdir(`/proc/${pid}/task`).catch(() => [String(pid)])) {
    try {
      os.setPriority(Number(tid), -10);
    } catch {
      // a thread that just ended
    }
  }
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

export interface ProbeReport {
  info: number[];
  read: number[];
  errors: string[];
}

export interface Probe {
  /** Stops the probe and returns what it measured. */
  stop(): Promise<ProbeReport>;
  /** Kills the probe if it still runs (for finally blocks). */
  kill(): void;
}

/** Starts the probe (helpers/probe-main.ts) in a process of its own; resolves once it measures. */
export async function startProbe(target: string, smallPath: string): Promise<Probe> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "probe-main.ts"), target, smallPath], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const deadline = Date.now() + 30_000;
  while (!out.includes("ready\n")) {
    if (child.exitCode !== null) throw new Error(`the probe exited early: ${err}`);
    if (Date.now() > deadline) throw new Error(`the probe did not get ready: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  await raisePriority(child.pid!);
  return {
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
    async stop() {
      child.stdin!.end();
      const code = await exited;
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (code !== 0 || !line) throw new Error(`the probe failed (${code}): ${err}`);
      return JSON.parse(line) as ProbeReport;
    },
  };
}

/** Samples RSS every `everyMs` until stopped; returns the highest seen. */
export function sampleRss(pid: number, everyMs = 10): { stop(): Promise<number> } {
  let max = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const m = await memoryOf(pid).catch(() => undefined);
      if (m && m.rss > max) max = m.rss;
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return max;
    },
  };
}

/** A file of `lines` lines of `width` bytes (newline included): its whole text is one ReadFile window. */
export async function writeLongLines(file: string, lines: number, width: number): Promise<void> {
  const line = Buffer.alloc(width, 0x61);
  line[width - 1] = 0x0a;
  await fs.mkdir(path.dirname(file), { recursive: true });
  const fh = await fs.open(file, "w");
  try {
    for (let i = 0; i < lines; i++) await fh.write(line);
  } finally {
    await fh.close();
  }
}

export interface ReadOutcome {
  ok: number;
  exhausted: number;
  /** Anything else: an error that is not RESOURCE_EXHAUSTED, or a reply of the wrong size. */
  other: string[];
}

/**
 * `n` ReadFiles of `file` at once over `client`. Replies are not decoded (a
 * hostile caller would not spend the CPU, and the test process must not steal
 * it from the agent it measures): each must be a ReadFileResponse message of
 * more than `expectBytes` bytes (the text and its fields).
 */
export async function concurrentReads(client: RpcClient, file: string, n: number, expectBytes: number): Promise<ReadOutcome> {
  const out: ReadOutcome = { ok: 0, exhausted: 0, other: [] };
  const request = Buffer.from(toBinary(ReadFileRequestSchema, create(ReadFileRequestSchema, { path: file })));
  await Promise.all(
    Array.from({ length: n }, async () => {
      try {
        const length = await new Promise<number>((resolve, reject) => {
          client.raw.makeUnaryRequest(
            `/${ContainerService.typeName}/ReadFile`,
            (b: Buffer) => b,
            (b: Buffer) => b.byteLength,
            request,
            (err: grpc.ServiceError | null, res?: number) => (err ? reject(fromServiceError(err)) : resolve(res!)),
          );
        });
        if (length > expectBytes && length < expectBytes + 64) out.ok++;
        else out.other.push(`a reply of ${length} bytes, not ${expectBytes} and a few`);
      } catch (err) {
        if (rpcCode(err) === Status.RESOURCE_EXHAUSTED) out.exhausted++;
        else out.other.push(`${rpcCode(err)}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }),
  );
  return out;
}

export interface UnreadStreams {
  /** Streams that got their first chunk (the agent is sending into them). */
  started(): number;
  /** Streams the agent refused with RESOURCE_EXHAUSTED. */
  exhausted(): number;
  /** Any other error. */
  errors(): string[];
  /** The counts, for messages. */
  summary(): string;
  close(): void;
}

/**
 * `perConnection` ReadRaw streams of `file` on each of `connections` clients,
 * none of them read past what HTTP/2 flow control lets in: the agent is left
 * holding whatever it wants to send.
 */
export async function unreadRawStreams(target: string, file: string, connections: number, perConnection: number): Promise<UnreadStreams> {
  const clients: RpcClient[] = [];
  let started = 0;
  let exhausted = 0;
  let closing = false;
  const errors: string[] = [];
  for (let c = 0; c < connections; c++) {
    // HTTP/2's default 64 KiB windows: the client takes in little, the agent must hold the rest.
    const client = new RpcClient(target, undefined, { "grpc-node.flow_control_window": 65_535 });
    clients.push(client);
    await client.waitForReady(10_000);
    for (let s = 0; s < perConnection; s++) {
      const call = client.serverStream(ContainerService.method.readRaw, { path: file });
      // One message is read, no more: the stream then stays paused.
      call.once("readable", () => {
        if (call.read() !== null) started++;
      });
      call.on("error", (err) => {
        if (rpcCode(err) === Status.RESOURCE_EXHAUSTED) exhausted++;
        else if (!closing) errors.push(`${rpcCode(err)}: ${err.message}`);
      });
    }
  }
  return {
    started: () => started,
    exhausted: () => exhausted,
    errors: () => [...errors],
    summary: () => `${started} started, ${exhausted} refused, ${errors.length} other errors of ${connections * perConnection} streams`,
    close() {
      closing = true;
      for (const c of clients) c.close();
    },
  };
}

export interface IdleConnections {
  /** Sockets the agent has closed so far, of each kind. */
  closed(): { silent: number; handshaken: number };
  /** Sockets connected (not refused at once) of each kind. */
  connected(): { silent: number; handshaken: number };
  close(): void;
}

/**
 * `silent` connections that never send a byte and `handshaken` ones that send
 * the HTTP/2 preface and SETTINGS (a real HTTP/2 session) and then no call.
 */
export async function idleConnections(socketPath: string, silent: number, handshaken: number): Promise<IdleConnections> {
  const sockets: net.Socket[] = [];
  const sessions: http2.ClientHttp2Session[] = [];
  const closed = { silent: 0, handshaken: 0 };
  const connected = { silent: 0, handshaken: 0 };
  const opens: Promise<void>[] = [];
  for (let i = 0; i < silent; i++) {
    opens.push(
      new Promise<void>((resolve) => {
        const s = net.connect(socketPath);
        sockets.push(s);
        s.on("error", () => undefined);
        s.once("connect", () => {
          connected.silent++;
          resolve();
        });
        s.once("close", () => {
          closed.silent++;
          resolve();
        });
        s.resume();
      }),
    );
  }
  for (let i = 0; i < handshaken; i++) {
    opens.push(
      new Promise<void>((resolve) => {
        const session = http2.connect("http://agent", { createConnection: () => net.connect(socketPath) });
        sessions.push(session);
        session.on("error", () => undefined);
        session.once("connect", () => {
          connected.handshaken++;
          resolve();
        });
        session.once("close", () => {
          closed.handshaken++;
          resolve();
        });
      }),
    );
  }
  await Promise.all(opens);
  return {
    closed: () => ({ ...closed }),
    connected: () => ({ ...connected }),
    close() {
      for (const s of sockets) s.destroy();
      for (const s of sessions) s.destroy();
    },
  };
}

/** Waits until `cond` holds, checking every 50 ms, or throws `what` after `timeoutMs`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string | (() => string), timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Writes up to `total` bytes of stdin to an Exec in `chunk`-sized messages, as
 * fast as the call's flow control lets it, and stops when everything is
 * written or the call has taken nothing for `stallMs`. Returns the bytes
 * handed to the call.
 */
export async function floodStdin(
  call: { write(msg: unknown): boolean; once(event: "drain", fn: () => void): unknown; off(event: "drain", fn: () => void): unknown },
  total: number,
  chunk: number,
  stallMs = 1500,
): Promise<number> {
  const data = Buffer.alloc(chunk, 0x78);
  let sent = 0;
  while (sent < total) {
    const ok = call.write({ msg: { case: "stdin", value: data } });
    sent += chunk;
    if (ok) continue;
    const drained = await new Promise<boolean>((resolve) => {
      const onDrain = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        call.off("drain", onDrain);
        resolve(false);
      }, stallMs);
      call.once("drain", onDrain);
    });
    if (!drained) break;
  }
  return sent;
}

export interface HalfSentMessages {
  /** Request bytes the agent took (HTTP/2 flow control let through), over all streams. */
  accepted(): number;
  /** Streams that got their status, by gRPC code ("8" is RESOURCE_EXHAUSTED). */
  statuses(): Record<string, number>;
  /** Streams still open. */
  open(): number;
  close(): void;
}

/**
 * `connections` × `perConnection` calls of `method` that each announce a
 * request message of `declared` bytes (the gRPC length prefix) and send its
 * body as fast as HTTP/2 flow control lets them, without ever finishing it:
 * requests the agent must receive before any handler sees them. Resolves once
 * no stream has been let to send more for `stallMs`.
 */
export async function halfSentMessages(
  socketPath: string,
  method: string,
  connections: number,
  perConnection: number,
  declared: number,
  stallMs = 1500,
): Promise<HalfSentMessages> {
  const sessions: http2.ClientHttp2Session[] = [];
  const statuses: Record<string, number> = {};
  let accepted = 0;
  let open = 0;
  let lastProgress = Date.now();
  const block = Buffer.alloc(16 * 1024);
  for (let c = 0; c < connections; c++) {
    const session = http2.connect("http://agent", { createConnection: () => net.connect(socketPath) });
    session.on("error", () => undefined);
    sessions.push(session);
    for (let s = 0; s < perConnection; s++) {
      const stream = session.request({
        ":method": "POST",
        ":path": method,
        "content-type": "application/grpc",
        te: "trailers",
      });
      open++;
      stream.on("error", () => undefined);
      let status: string | undefined;
      stream.on("response", (headers) => {
        if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
      });
      stream.on("trailers", (trailers) => {
        if (trailers["grpc-status"] !== undefined) status = String(trailers["grpc-status"]);
      });
      stream.on("close", () => {
        open--;
        const key = status ?? "closed";
        statuses[key] = (statuses[key] ?? 0) + 1;
      });
      stream.resume();
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(declared, 1);
      let left = declared - 1; // never the last byte
      const pump = (): void => {
        while (left > 0 && !stream.destroyed) {
          const n = Math.min(left, block.byteLength);
          left -= n;
          // Counted when HTTP/2 lets the bytes go (the agent's window had room).
          const ok = stream.write(block.subarray(0, n), () => {
            accepted += n;
            lastProgress = Date.now();
          });
          if (!ok) {
            stream.once("drain", pump);
            return;
          }
        }
      };
      stream.write(prefix);
      pump();
    }
  }
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (Date.now() - lastProgress >= stallMs) {
        clearInterval(t);
        resolve();
      }
    }, 100);
  });
  return {
    accepted: () => accepted,
    statuses: () => ({ ...statuses }),
    open: () => open,
    close() {
      for (const s of sessions) s.destroy();
    },
  };
}
