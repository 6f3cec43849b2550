// A workspace's stored spec brought up to this version's sandbox before its task starts.
// containerd keeps the spec a container was created with, and every task of it runs
// with that spec: without this, a workspace created by an earlier version would keep
// that version's sandbox (its seccomp profile, capabilities, masked paths, sysctls, the
// OOM scores of the agent and its children) until it was deleted and created again.
// Only the sandbox is rewritten; mounts, devices, limits, the image's environment and
// everything else the spec holds stay as they are. Workspaces that were not created by
// this orchestrator (legacy `mcp-` containers, or a spec that does not run the agent
// from the runtime bundle) are left alone. Callers hold the bot's lock.
import type { Spec } from "../containerd/spec-types.js";
import type { WorkspaceContext } from "./context.js";
import { AGENT_COMMAND, OOM_SCORES, withWorkspaceSandbox } from "./container-spec.js";
import { isLegacyContainerId } from "./botid.js";
import { WorkspaceError } from "./errors.js";

const CHILD_OOM_ENV = "BRIDGE_CHILD_OOM_SCORE_ADJ=";

/** `spec` with this version's sandbox (a copy), or undefined when it is not a workspace spec of ours. */
export function refreshedSandbox(spec: Spec): Spec | undefined {
  const args = spec.process?.args ?? [];
  if (args.length !== AGENT_COMMAND.length || args.some((a, i) => a !== AGENT_COMMAND[i])) return undefined;
  const next = structuredClone(spec);
  next.linux.maskedPaths ??= [];
  withWorkspaceSandbox()(next);
  next.process.oomScoreAdj = OOM_SCORES.agent;
  // Replaced where it stands (withAgentProcess puts more after it), added at the end only when missing.
  const env = next.process.env ?? [];
  const value = `${CHILD_OOM_ENV}${OOM_SCORES.children}`;
  next.process.env = env.some((e) => e.startsWith(CHILD_OOM_ENV)) ? env.map((e) => (e.startsWith(CHILD_OOM_ENV) ? value : e)) : [...env, value];
  return next;
}

/**
 * Rewrites the stored spec of `containerId` when its sandbox differs from this version's;
 * returns whether it did (and records a "spec_refreshed" event).
 */
export async function refreshStoredSandbox(ctx: WorkspaceContext, containerId: string): Promise<boolean> {
  if (isLegacyContainerId(containerId)) return false;
  const info = await ctx.cd.containers.get(containerId);
  if (info.spec === undefined) throw new WorkspaceError("internal", `container ${containerId} has no spec`);
  const next = refreshedSandbox(info.spec);
  if (next === undefined || JSON.stringify(next) === JSON.stringify(info.spec)) return false;
  await ctx.cd.containers.update(containerId, { spec: next });
  await ctx.store.recordEvent(containerId, "spec_refreshed", { reason: "sandbox of an earlier version" });
  return true;
}
