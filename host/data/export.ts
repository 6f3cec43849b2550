// Export: the workspace's /data as a tar.gz streamed to `out`. A running workspace is read
// through its agent: one ReadTree stream (capability "read-tree"), or for older agents a
// ListDir walk and one ReadRaw per file (sizes from the agent's fstat of the open fd); a
// stopped one (or one whose task is paused by the caller) from its rootfs snapshot mounted
// read-only on the host. Callers hold the bot's lock, so the workspace is neither started
// nor stopped under the export.
import fs from "node:fs";
import type { Writable } from "node:stream";
import type { WorkspaceContext } from "../workspace/context.js";
import { WorkspaceError } from "../workspace/errors.js";
import { ArchiveWriter, packBridgeTree, packHostTree, type ArchiveProgress, type PackResult } from "./archive.js";
import { packReadTree } from "./archive-tree.js";
import { DATA_DIR, checkDataDir, mountRootfs, removeJournal, rootfsOf, taskRunning, writeJournal } from "./workspace-fs.js";

export interface ExportOptions {
  onProgress?: (p: ArchiveProgress) => void;
  signal?: AbortSignal;
  /** gzip level (default 6). */
  level?: number;
}

/**
 * Archives /data of the (not running) snapshot `key` into `writer`. The caller's journal
 * names the operation (it mounts the rootfs on the host) and outlives this: a backup
 * keeps it until its file is in place.
 */
export async function packSnapshot(ctx: WorkspaceContext, botId: string, key: string, snapshotter: string, writer: ArchiveWriter): Promise<void> {
  const m = await mountRootfs(ctx, botId, key, snapshotter, false);
  try {
    if (checkDataDir(m, false)) {
      const st = fs.statSync(m.data);
      await writer.directory(".", st.mode, st.mtimeMs, { uid: st.uid, gid: st.gid });
      await packHostTree(m.data, writer);
    }
  } finally {
    await m.release();
  }
}

/** Streams /data of the bot's workspace to `out` as a tar.gz. Callers hold the bot's lock. */
export async function exportData(ctx: WorkspaceContext, botId: string, out: Writable, opts: ExportOptions = {}): Promise<PackResult> {
  const row = await ctx.liveRow(botId);
  const containerId = row?.containerId;
  if (containerId === undefined || !(await ctx.containerExists(containerId))) throw new WorkspaceError("not_found", `bot ${botId} has no workspace`);
  const writer = new ArchiveWriter(out, { ...(opts.onProgress ? { onProgress: opts.onProgress } : {}), ...(opts.level !== undefined ? { level: opts.level } : {}) });
  try {
    if (await taskRunning(ctx, containerId)) {
      const client = await ctx.bridges.get(botId);
      const signal = opts.signal ? { signal: opts.signal } : {};
      if ((await client.info()).capabilities.includes("read-tree")) {
        await packReadTree(client, writer, { dir: `/${DATA_DIR}`, ...signal });
      } else {
        const root = (await client.stat(`/${DATA_DIR}`)).info;
        if (root !== undefined) await writer.directory(".", root.mode, Number(root.mtimeMs));
        await packBridgeTree(client, writer, { dir: `/${DATA_DIR}`, ...signal });
      }
    } else {
      const { key, snapshotter } = await rootfsOf(ctx, containerId);
      writeJournal(ctx, { op: "export", botId, containerId, startedAt: new Date().toISOString() });
      try {
        await packSnapshot(ctx, botId, key, snapshotter, writer);
      } finally {
        removeJournal(ctx, botId);
      }
    }
  } catch (err) {
    writer.abort(err);
    throw err;
  }
  const result = await writer.finish();
  await ctx.store.recordEvent(containerId, "data_exported", { botId, files: result.files, bytes: result.bytes, skipped: result.skipped.length, lost: result.lost.length });
  return result;
}
