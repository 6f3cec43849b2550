// What WorkspaceManager.call needs around a bridge client: which calls may be repeated
// after the agent was restarted, a client that records the calls made through it, and
// the translation of their errors.
import type { BridgeClient } from "../bridge/client.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { WorkspaceError, toWorkspaceError } from "./errors.js";

/**
 * Bridge calls that are safe to run again after the agent was restarted: they only
 * read. Anything else (Exec, WriteFile, WriteRaw, Rename, DeleteFile, Mkdir, McpStdio,
 * StartJob, SignalJob…) may have taken effect before the agent died, so it is never
 * re-run blindly.
 */
export const IDEMPOTENT_BRIDGE_CALLS: ReadonlySet<string> = new Set([
  "info",
  "stat",
  "listDir",
  "readFile",
  "readRaw",
  "readRawHandoff",
  "readTree",
  "listJobs",
  "getJob",
  "readJobOutput",
  "waitJob",
  "grep",
  "glob",
]);

/** The bridge says the agent is gone (socket missing, connection refused or dropped). */
export function isBridgeUnavailable(err: unknown): boolean {
  return rpcCode(err) === Status.UNAVAILABLE;
}

/**
 * An error out of a call()'s function: the bridge's (gRPC status) and the workspace
 * layer's become WorkspaceErrors; the caller's own errors pass through unchanged.
 */
export function fromCall(err: unknown): unknown {
  return err instanceof WorkspaceError || rpcCode(err) !== undefined ? toWorkspaceError(err) : err;
}

/**
 * The client, recording the name of every method called on it into `used`, and timing
 * the calls that return a promise (for metrics).
 */
export function trackCalls(client: BridgeClient, used: Set<string>, onCall?: (rpc: string, seconds: number, ok: boolean) => void): BridgeClient {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || typeof prop !== "string") {
        // Direct access to the raw channel (`rpc`) can do anything: count it as unsafe.
        if (prop === "rpc") used.add("rpc");
        return value;
      }
      return (...args: unknown[]) => {
        used.add(prop);
        const t0 = performance.now();
        const result = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (onCall !== undefined && result instanceof Promise) {
          result.then(
            () => onCall(prop, (performance.now() - t0) / 1000, true),
            () => onCall(prop, (performance.now() - t0) / 1000, false),
          );
        }
        return result;
      };
    },
  });
}
