// Where a workspace's host-side files live under the data root. Bot ids are checked
// before they become paths (botid.ts), so nothing here can leave the data root.
import path from "node:path";
import { validateBotId } from "./botid.js";

/** `<dataRoot>/run/<bot>`: mounted at /run/memoh in the container, holds the agent's socket. */
export function socketDir(dataRoot: string, botId: string): string {
  return path.join(path.resolve(dataRoot), "run", validateBotId(botId));
}

/** `<dataRoot>/run/<bot>/bridge.sock`: the host side of /run/memoh/bridge.sock. */
export function socketPath(dataRoot: string, botId: string): string {
  return path.join(socketDir(dataRoot, botId), "bridge.sock");
}

/** `<dataRoot>/logs`: the task output of every workspace (size-capped, rotated). */
export function logDir(dataRoot: string): string {
  return path.join(path.resolve(dataRoot), "logs");
}

/** `<dataRoot>/logs/<container>.log`: what the agent and tini print. */
export function logPath(dataRoot: string, containerId: string): string {
  return path.join(logDir(dataRoot), `${containerId}.log`);
}
