// The one place that answers "which container is this bot's workspace?".
// Order (every lookup goes through here, so all agree): the database row, then the `memoh.bot_id` label on
// containerd's containers, then a scan of container names (`workspace-<bot>`,
// legacy `mcp-<bot>`), then the default `workspace-<bot>`.
import type { ContainerdClient } from "../containerd/client.js";
import type { Store } from "../store/types.js";
import { isLegacyContainerId, legacyContainerId, validateBotId, workspaceContainerId } from "./botid.js";

export const LABEL_BOT_ID = "memoh.bot_id";
export const LABEL_WORKSPACE = "memoh.workspace";
export const LABEL_CDI_DEVICES = "memoh.workspace.cdi_devices";
export const WORKSPACE_GENERATION = "v3";

export type ResolvedFrom = "database" | "label" | "name" | "default";

export interface ResolvedContainer {
  botId: string;
  containerId: string;
  /** Where the answer came from. */
  from: ResolvedFrom;
  /** A legacy `mcp-<bot>` container (TCP bridge). */
  legacy: boolean;
  /** Whether containerd currently has this container (undefined for a database answer: not checked). */
  exists: boolean | undefined;
}

export async function resolveContainerId(botId: string, deps: { store: Store; containerd: ContainerdClient }): Promise<ResolvedContainer> {
  validateBotId(botId);
  const row = await deps.store.getContainerByBot(botId);
  if (row !== undefined && row.status !== "deleted") {
    return { botId, containerId: row.containerId, from: "database", legacy: isLegacyContainerId(row.containerId), exists: undefined };
  }
  const labelled = await deps.containerd.containers.listByLabel(LABEL_BOT_ID, botId);
  if (labelled.length > 0) {
    // Prefer the current generation when both a new and a legacy container carry the label.
    const pick = labelled.find((c) => !isLegacyContainerId(c.id)) ?? labelled[0]!;
    return { botId, containerId: pick.id, from: "label", legacy: isLegacyContainerId(pick.id), exists: true };
  }
  const names = new Set((await deps.containerd.containers.list()).map((c) => c.id));
  for (const id of [workspaceContainerId(botId), legacyContainerId(botId)]) {
    if (names.has(id)) return { botId, containerId: id, from: "name", legacy: isLegacyContainerId(id), exists: true };
  }
  return { botId, containerId: workspaceContainerId(botId), from: "default", legacy: false, exists: false };
}
