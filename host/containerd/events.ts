// Events: a subscription to containerd's event stream, with decoded task exits.
import { fromBinary } from "@bufbuild/protobuf";
import { Events, type Envelope } from "../../proto/gen/containerd/services/events/v1/events_pb.js";
import { TaskExitSchema } from "../../proto/gen/containerd/events/task_pb.js";
import type { ContainerdConnection } from "./connection.js";
import type { ContainerdError } from "./errors.js";
import { timestampToDate } from "./snapshots.js";

export const TASK_EXIT_TOPIC = "/tasks/exit";
export const TASK_EXIT_TYPE_URL = "containerd.events.TaskExit";

export interface TaskExitEvent {
  namespace: string;
  containerId: string;
  /** The process id (the container id for its init process, the exec id otherwise). */
  id: string;
  pid: number;
  exitStatus: number;
  exitedAt: Date | undefined;
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

/** Decodes a TaskExit envelope; undefined for any other event. */
export function decodeTaskExit(e: EventEnvelope): TaskExitEvent | undefined {
  if (e.typeUrl !== TASK_EXIT_TYPE_URL && !e.typeUrl.endsWith(`/${TASK_EXIT_TYPE_URL}`)) return undefined;
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
  const stream = conn.serverStream(Events.method.subscribe, { filters }, { signal: controller.signal });
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

/** Task exit events only (of the connection's namespace unless `allNamespaces`). */
export function subscribeTaskExits(conn: ContainerdConnection, opts: { allNamespaces?: boolean } = {}): Subscription<TaskExitEvent> {
  const filter = `topic==${JSON.stringify(TASK_EXIT_TOPIC)}${opts.allNamespaces ? "" : `,namespace==${JSON.stringify(conn.namespace)}`}`;
  const sub = subscribe(conn, [filter]);
  return {
    close: () => sub.close(),
    async *[Symbol.asyncIterator]() {
      for await (const e of sub) {
        const exit = decodeTaskExit(e);
        if (exit) yield exit;
      }
    },
  };
}

/** Resolves with the first exit of `containerId`'s init process seen on `sub`. */
export async function nextExit(sub: Subscription<TaskExitEvent>, containerId: string): Promise<TaskExitEvent> {
  for await (const e of sub) if (e.containerId === containerId && e.id === containerId) return e;
  throw new Error(`event stream ended before ${containerId} exited`);
}
