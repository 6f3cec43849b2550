// Drives Exec through the typed client: open a session, talk to it, collect the result.
import fs from "node:fs";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  ContainerService,
  type ExecExit,
  type ExecRequestSchema,
  type ExecStartSchema,
} from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { fromServiceError, type RpcClient } from "../../../proto/rpc.js";

export type ExecStartInit = MessageInitShape<typeof ExecStartSchema>;
type ExecRequestInit = MessageInitShape<typeof ExecRequestSchema>;

export interface ExecResult {
  pid: number;
  stdout: Buffer;
  stderr: Buffer;
  exit: ExecExit;
  /** Reply kinds in arrival order, runs of stdout/stderr folded into one entry. */
  order: string[];
}

export class ExecSession {
  readonly call;
  readonly started: Promise<number>;
  readonly done: Promise<ExecResult>;
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];
  private readonly order: string[] = [];
  private outputWaiters: Array<() => void> = [];

  constructor(client: RpcClient, start: ExecStartInit) {
    this.call = client.bidi(ContainerService.method.exec);
    let pid = 0;
    let exit: ExecExit | undefined;
    let resolveStarted!: (pid: number) => void;
    this.started = new Promise((resolve) => (resolveStarted = resolve));
    this.done = new Promise<ExecResult>((resolve, reject) => {
      this.call.on("data", (reply) => {
        const kind = reply.msg.case ?? "empty";
        if (this.order[this.order.length - 1] !== kind || (kind !== "stdout" && kind !== "stderr")) this.order.push(kind);
        switch (reply.msg.case) {
          case "started":
            pid = reply.msg.value.pid;
            resolveStarted(pid);
            break;
          case "stdout":
            this.out.push(Buffer.from(reply.msg.value));
            break;
          case "stderr":
            this.err.push(Buffer.from(reply.msg.value));
            break;
          case "exit":
            exit = reply.msg.value;
            break;
        }
        const waiters = this.outputWaiters;
        this.outputWaiters = [];
        for (const w of waiters) w();
      });
      this.call.on("error", (e) => reject(fromServiceError(e)));
      this.call.on("end", () => {
        if (!exit) reject(new Error("stream ended without exit"));
        else resolve({ pid, stdout: Buffer.concat(this.out), stderr: Buffer.concat(this.err), exit, order: this.order });
      });
    });
    // A failing call must not surface as an unhandled rejection in tests that only await `done` later.
    this.done.catch(() => {});
    this.started.catch(() => {});
    this.send({ msg: { case: "start", value: start } });
  }

  send(req: ExecRequestInit): void {
    this.call.write(req);
  }
  stdin(data: string | Uint8Array): void {
    this.send({ msg: { case: "stdin", value: typeof data === "string" ? Buffer.from(data) : data } });
  }
  closeStdin(): void {
    this.send({ msg: { case: "closeStdin", value: true } });
  }
  signal(name: string): void {
    this.send({ msg: { case: "signal", value: name } });
  }
  resize(cols: number, rows: number): void {
    this.send({ msg: { case: "resize", value: { cols, rows } } });
  }
  /** Half-closes the request stream. */
  end(): void {
    this.call.end();
  }
  cancel(): void {
    this.call.cancel();
  }

  stdoutText(): string {
    return Buffer.concat(this.out).toString("utf8");
  }

  /** Resolves once stdout matches `pattern` (fails after timeoutMs). */
  async waitForStdout(pattern: RegExp, timeoutMs = 3000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = this.stdoutText();
      if (pattern.test(text)) return text;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`stdout did not match ${pattern} in ${timeoutMs} ms; got ${JSON.stringify(text)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.outputWaiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

export interface RunExecOptions {
  stdin?: Array<string | Uint8Array>;
  /** Send close_stdin after the stdin chunks (default: only half-close). */
  closeStdin?: boolean;
}

/** Runs one exec to completion: start, stdin chunks, optional close_stdin, half-close. */
export async function runExec(client: RpcClient, start: ExecStartInit, opts: RunExecOptions = {}): Promise<ExecResult> {
  const session = new ExecSession(client, start);
  for (const chunk of opts.stdin ?? []) session.stdin(chunk);
  if (opts.closeStdin) session.closeStdin();
  session.end();
  return session.done;
}

/**
 * Whether a process no longer runs. A zombie that is not our child counts as
 * gone: it is dead, and reaping it is the job of PID 1 (tini in a workspace;
 * on a test machine init may take a moment).
 */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ESRCH";
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" && Number(fields[1]) !== process.pid;
  } catch {
    return true;
  }
}

export async function waitGone(pids: number[], timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter((pid) => !processGone(pid));
    if (alive.length === 0) return;
    if (Date.now() > deadline) throw new Error(`still running after ${timeoutMs} ms: ${alive.join(", ")}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
