// What the agent started, and how it is stopped.
//
// Every process the agent spawns (Exec on pipes or a pty, McpStdio) starts a
// new session: a detached spawn and forkpty both call setsid, so the process's
// pid is its session id and its process group id. Whatever it starts stays in
// that session unless it calls setsid itself, even when it moves to another
// process group (a shell with job control, `set -m`, puts every background job
// in a group of its own). So the agent stops a tree by its session: it signals
// the leader's group, then every process whose session id (field 6 of
// /proc/<pid>/stat) is the leader's, and looks again until none is left.
// A session id is not handed to a new process while any member of the old
// session lives (the kernel keeps the pid in use), so this never hits a
// stranger that merely reuses the number.
//
// Timeout, client cancel, a failed call and agent shutdown stop the whole
// session. A signal the client sends goes to the leader's process group only,
// as `kill -SIG -pgid` would. A session whose leader exited normally may leave
// processes behind (`server &`): they run on, and are stopped when the agent
// shuts down.
import fs from "node:fs";
import fsp from "node:fs/promises";
import type { AgentContext } from "../context.js";
import { logLine } from "../log.js";

/** Sends a signal to a whole process group; a group already gone is not an error. */
export function killGroup(pid: number, signal: NodeJS.Signals | number = "SIGKILL"): void {
  if (!(pid > 1)) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group has exited.
  }
}

interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses). */
function parseStat(pid: number, text: string): ProcStat | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const f = text.slice(close + 2).split(" ");
  const pgrp = Number(f[2]);
  const session = Number(f[3]);
  if (!Number.isInteger(pgrp) || !Number.isInteger(session)) return undefined;
  return { pid, state: f[0] ?? "", ppid: Number(f[1]), pgrp, session };
}

function pidsInProc(): number[] {
  try {
    return fs
      .readdirSync("/proc")
      .filter((name) => /^[0-9]+$/.test(name))
      .map(Number);
  } catch {
    return [];
  }
}

/** How long a forked child may take to start its own session before the agent stops waiting. */
const SETSID_WAIT_MS = 5_000;

/**
 * Resolves once `pid`, a child the agent forked, leads its own session, or is no
 * longer a live child of the agent. A child forked without exec (forkpty) calls
 * setsid after fork returns in the agent; until then it belongs to the agent's
 * session and process group, so a signal to its group (kill -pid) finds nobody and
 * killSession misses it. Waiting here makes "started" mean that both reach it. The
 * child gets there within microseconds unless the machine is loaded; this looks at
 * /proc/<pid>/stat at once and then after 1, 2, 4 … 20 ms.
 */
export async function untilOwnSession(pid: number): Promise<void> {
  const deadline = Date.now() + SETSID_WAIT_MS;
  let delayMs = 1;
  for (;;) {
    let st: ProcStat | undefined;
    try {
      st = parseStat(pid, fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return; // reaped already
    }
    if (!st || st.session === pid || st.state === "Z" || st.state === "X" || st.ppid !== process.pid) return;
    if (Date.now() >= deadline) {
      logLine(`process ${pid} did not start its own session within ${SETSID_WAIT_MS} ms`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    delayMs = Math.min(delayMs * 2, 20);
  }
}

/** Live (not zombie) processes in any of `sessions`, the agent itself never included. */
export function sessionMembers(sessions: ReadonlySet<number>): ProcStat[] {
  const members: ProcStat[] = [];
  if (sessions.size === 0) return members;
  for (const pid of pidsInProc()) {
    if (pid === process.pid) continue;
    let text: string;
    try {
      text = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    const st = parseStat(pid, text);
    if (st && st.state !== "Z" && st.state !== "X" && sessions.has(st.session)) members.push(st);
  }
  return members;
}

/** The agent's own session id: never one of the sessions it kills. */
function ownSession(): number | undefined {
  try {
    return parseStat(process.pid, fs.readFileSync("/proc/self/stat", "utf8"))?.session;
  } catch {
    return undefined;
  }
}

/** Rounds of look-and-kill: a process forking while it is killed shows up in the next round. */
const KILL_ROUNDS = 20;

/** SIGKILLs every process of the given sessions (their leaders' groups first). */
export function killSessions(sids: Iterable<number>): void {
  const own = ownSession();
  const sessions = new Set([...sids].filter((sid) => sid > 1 && sid !== own && sid !== process.pid));
  if (sessions.size === 0) return;
  for (const sid of sessions) killGroup(sid, "SIGKILL");
  for (let round = 0; round < KILL_ROUNDS; round++) {
    const members = sessionMembers(sessions);
    if (members.length === 0) return;
    for (const m of members) {
      killGroup(m.pgrp, "SIGKILL");
      try {
        process.kill(m.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
  logLine(`processes of sessions ${[...sessions].join(", ")} still running after ${KILL_ROUNDS} rounds of SIGKILL`);
}

/** SIGKILLs a session: the process the agent started and everything it left in its session. */
export function killSession(sid: number): void {
  killSessions([sid]);
}

/** A process the agent started and still waits for (an Exec or McpStdio call in progress). */
export interface RunningChild {
  readonly pid: number;
  /** The agent is shutting down: the call ends now (its process is being killed). */
  shutdown(): void;
  /** Resolves once the call has finished with its process. */
  readonly finished: Promise<void>;
}

interface Registry {
  /** Sessions started by this agent that may still have members. */
  sessions: Set<number>;
  running: Set<RunningChild>;
  shuttingDown: boolean;
  pruning: NodeJS.Timeout | undefined;
}

const registries = new WeakMap<AgentContext, Registry>();

function registry(ctx: AgentContext): Registry {
  let r = registries.get(ctx);
  if (!r) {
    r = { sessions: new Set(), running: new Set(), shuttingDown: false, pruning: undefined };
    registries.set(ctx, r);
  }
  return r;
}

/** Whether the agent has started to stop the processes it started. */
export function isShuttingDown(ctx: AgentContext): boolean {
  return registry(ctx).shuttingDown;
}

/**
 * Registers a just-started session leader. If the agent is already shutting
 * down, the session is killed at once and shutdown() is called.
 */
export function trackChild(ctx: AgentContext, child: RunningChild): void {
  const r = registry(ctx);
  r.sessions.add(child.pid);
  r.running.add(child);
  void child.finished.then(() => {
    r.running.delete(child);
    schedulePrune(r);
  });
  if (r.shuttingDown) {
    killSession(child.pid);
    child.shutdown();
  }
}

/** How long after a call ends the sessions without members are forgotten. */
const PRUNE_DELAY_MS = 1000;

/** Forgets sessions that have no live member and no call in progress (in the background, batched). */
function schedulePrune(r: Registry): void {
  if (r.pruning !== undefined || r.shuttingDown) return;
  r.pruning = setTimeout(() => {
    void prune(r).finally(() => (r.pruning = undefined));
  }, PRUNE_DELAY_MS);
  r.pruning.unref();
}

async function prune(r: Registry): Promise<void> {
  const live = new Set<number>();
  let names: string[];
  try {
    names = await fsp.readdir("/proc");
  } catch {
    return;
  }
  for (const name of names) {
    if (!/^[0-9]+$/.test(name)) continue;
    const text = await fsp.readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
    const st = text ? parseStat(Number(name), text) : undefined;
    if (st && st.state !== "Z") live.add(st.session);
  }
  const busy = new Set([...r.running].map((c) => c.pid));
  for (const sid of r.sessions) {
    if (!live.has(sid) && !busy.has(sid)) r.sessions.delete(sid);
  }
}

/** Sessions this agent started that may still have members (tests, diagnostics). */
export function trackedSessions(ctx: AgentContext): number[] {
  return [...registry(ctx).sessions];
}

/** How long shutdown waits for the calls whose processes it killed to send their last message. */
const SHUTDOWN_CALLS_MS = 2000;

/**
 * Agent shutdown: kills every session the agent started (running calls and what
 * finished calls left behind), tells each running call so it can end with a
 * status, and resolves once they have ended (at most SHUTDOWN_CALLS_MS).
 */
export async function killAllChildren(ctx: AgentContext): Promise<void> {
  const r = registry(ctx);
  r.shuttingDown = true;
  if (r.pruning !== undefined) clearTimeout(r.pruning);
  const running = [...r.running];
  for (const child of running) child.shutdown();
  killSessions(r.sessions);
  // Older entries of ctx.children (a process registered there only) are killed by group.
  for (const child of ctx.children) {
    if (child.pid !== undefined) killGroup(child.pid, "SIGKILL");
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(running.map((c) => c.finished)),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, SHUTDOWN_CALLS_MS))),
  ]);
  clearTimeout(timer);
  ctx.children.clear();
}
