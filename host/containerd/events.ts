// Events: a subscription to containerd's event stream, with decoded task exits
// and OOM kills.
import { fromBinary } from "@bufbuild/protobuf";
import { Events, type Envelope } from "../../proto/gen/containerd/services/events/v1/events_pb.js";
import { TaskExitSchema, TaskOOMSchema } from "../../proto/gen/containerd/events/task_pb.js";
import type { ContainerdConnection } from "./connection.js";
import type { ContainerdError } from "./errors.js";
import { timestampToDate } from "./snapshots.js";

export const TASK_EXIT_TOPIC = "/tasks/exit";
export const TASK_EXIT_TYPE_URL = "containerd.events.TaskExit";
export const TASK_OOM_TOPIC = "/tasks/oom";
export const TASK_OOM_TYPE_URL = "containerd.events.TaskOOM";

export interface TaskExitEvent {
  namespace: string;
  containerId: string;
  /** The process id (the container id for its init process, the exec id otherwise). */
  id: string;
  pid: number;
  exitStatus: number;
  exitedAt: Date | undefined;
}

/**
 * The OOM killer killed a process in the task's cgroup (the shim watches the
 * cgroup's OOM notifications). The task itself may live on: the victim can be
 * any process in it.
 */
export interface TaskOomEvent {
  namespace: string;
  containerId: string;
  timestamp: Date | undefined;
}

export interface EventEnvelope {
  namespace: string;
  topic: string;
  timestamp: Date | undefined;
  typeUrl: string;
  value: Uint8Array;
}

/** A live subscription: iterate it for events; close() ends it. */
export interface Subscription<T> extends AsyncIterable<T> {
  close(): void;
}

function toEnvelope(e: Envelope): EventEnvelope {
  return {
    namespace: e.namespace,
    topic: e.topic,
    timestamp: timestampToDate(e.timestamp),
    typeUrl: e.event?.typeUrl ?? "",
    value: e.event?.value ?? new Uint8Array(),
  };
}

const hasType = (e: EventEnvelope, typeUrl: string) => e.typeUrl === typeUrl || e.typeUrl.endsWith(`/${typeUrl}`);

/** Decodes a TaskExit envelope; undefined for any other event. */
export function decodeTaskExit(e: EventEnvelope): TaskExitEvent | undefined {
  if (!hasType(e, TASK_EXIT_TYPE_URL)) return undefined;
  const m = fromBinary(TaskExitSchema, e.value);
  return { namespace: e.namespace, containerId: m.containerId, id: m.id, pid: m.pid, exitStatus: m.exitStatus, exitedAt: timestampToDate(m.exitedAt) };
}

/**
 * Subscribes to events matching any of `filters` (containerd syntax, e.g.
 * `topic=="/tasks/exit"`, `namespace==memoh`). Events are buffered until read.
 * No reconnect: the iterator throws (a ContainerdError) when the stream fails.
 */
export function subscribe(conn: ContainerdConnection, filters: string[] = []): Subscription<EventEnvelope> {
  const controller = new AbortController();
  // Silence is normal here; the connection's keepalive pings find a hung daemon.
  const stream = conn.serverStream(Events.method.subscribe, { filters }, { signal: controller.signal, idleTimeoutMs: 0 });
  // Errors would otherwise be unhandled when nobody iterates right now.
  const queue: EventEnvelope[] = [];
  let failure: ContainerdError | undefined;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  stream.on("data", (e: Envelope) => {
    queue.push(toEnvelope(e));
    notify();
  });
  stream.on("error", (err: Error) => {
    if (!controller.signal.aborted) failure = conn.wrap(err, Events.method.subscribe);
    ended = true;
    notify();
  });
  stream.on("end", () => {
    ended = true;
    notify();
  });
  return {
    close: () => {
      controller.abort();
      ended = true;
      notify();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (failure) throw failure;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

/** Decodes a TaskOOM envelope; undefined for any other event. */
export function decodeTaskOom(e: EventEnvelope): TaskOomEvent | undefined {
  if (!hasType(e, TASK_OOM_TYPE_URL)) return undefined;
  const m = fromBinary(TaskOOMSchema, e.value);
  return { namespace: e.namespace, containerId: m.containerId, timestamp: e.timestamp };
}

export interface TopicSubscriptionOptions {
  /** Every namespace instead of the connection's. */
  allNamespaces?: boolean;
}

function subscribeTopic<T>(conn: ContainerdConnection, topic: string, decode: (e: EventEnvelope) => T | undefined, opts: TopicSubscriptionOptions): Subscription<T> {
  const filter = `topic==${JSON.stringify(topic)}${opts.allNamespaces ? "" : `,namespace==${JSON.stringify(conn.namespace)}`}`;
  const sub = subscribe(conn, [filter]);
  return {
    close: () => sub.close(),
    async *[Symbol.asyncIterator]() {
      for await (const e of sub) {
        const decoded = decode(e);
        if (decoded) yield decoded;
      }
    },
  };
}

/** Task exit events only (of the connection's namespace unless `allNamespaces`). */
export function subscribeTaskExits(conn: ContainerdConnection, opts: TopicSubscriptionOptions = {}): Subscription<TaskExitEvent> {
  return subscribeTopic(conn, TASK_EXIT_TOPIC, decodeTaskExit, opts);
}

/** OOM kills in tasks (of the connection's namespace unless `allNamespaces`). */
export function subscribeTaskOoms(conn: ContainerdConnection, opts: TopicSubscriptionOptions = {}): Subscription<TaskOomEvent> {
  return subscribeTopic(conn, TASK_OOM_TOPIC, decodeTaskOom, opts);
}

/** An exit or an OOM kill of a task: what a supervisor follows, on one stream. */
export type TaskEvent = { type: "exit"; exit: TaskExitEvent } | { type: "oom"; oom: TaskOomEvent };

/** Task exits and OOM kills (of the connection's namespace unless `allNamespaces`), in the order containerd sent them. */
export function subscribeTaskEvents(conn: ContainerdConnection, opts: TopicSubscriptionOptions = {}): Subscription<TaskEvent> {
  const ns = opts.allNamespaces ? "" : `,namespace==${JSON.stringify(conn.namespace)}`;
  // containerd ORs its filters: one stream carries both topics.
  const sub = subscribe(conn, [`topic==${JSON.stringify(TASK_EXIT_TOPIC)}${ns}`, `topic==${JSON.stringify(TASK_OOM_TOPIC)}${ns}`]);
  return {
    close: () => sub.close(),
    async *[Symbol.asyncIterator]() {
      for await (const e of sub) {
        const exit = decodeTaskExit(e);
        if (exit) {
          yield { type: "exit", exit };
          continue;
        }
        const oom = decodeTaskOom(e);
        if (oom) yield { type: "oom", oom };
      }
    },
  };
}

/** Resolves with the first exit of `containerId`'s init process seen on `sub`. */
export async function nextExit(sub: Subscription<TaskExitEvent>, containerId: string): Promise<TaskExitEvent> {
  for await (const e of sub) if (e.containerId === containerId && e.id === containerId) return e;
  throw new Error(`event stream ended before ${containerId} exited`);
}
