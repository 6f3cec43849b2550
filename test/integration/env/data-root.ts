// Removing a test's data root: the socket dirs under it are tmpfs mounts while their
// workspaces exist (host/workspace/socket-dir.ts), and a test that ended without deleting
// every workspace (or killed the server) leaves some; they are unmounted first, deepest
// first, so the removal neither fails on a mount point nor leaves mounts behind.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { mountPoints } from "../../../host/containerd/snapshots.js";

export function removeDataRoot(dataRoot: string): void {
  if (!fs.existsSync(dataRoot)) return;
  const under = `${fs.realpathSync(dataRoot)}/`;
  const mounts = mountPoints()
    .filter((m) => m.startsWith(under))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) execFileSync("umount", ["-l", m]);
  fs.rmSync(dataRoot, { recursive: true, force: true });
}
