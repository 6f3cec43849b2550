// Every process group the agent starts is registered here, so that shutdown
// (and a lost client) can kill whole groups and leave nothing behind.
import type { AgentContext } from "../context.js";

/** Sends a signal to a whole process group; a group already gone is not an error. */
export function killGroup(pid: number, signal: NodeJS.Signals | number = "SIGKILL"): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group has exited.
  }
}

export function killAllChildren(ctx: AgentContext): void {
  for (const child of ctx.children) {
    if (child.pid !== undefined) killGroup(child.pid, "SIGKILL");
  }
  ctx.children.clear();
}
