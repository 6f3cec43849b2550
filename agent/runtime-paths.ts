// Where the agent finds the runtime bundle that the host mounts read-only at /opt/memoh
// (see DESIGN.md, "The runtime bundle"; scripts/build-runtime.ts produces it).
//
// node-pty is a native addon and esbuild cannot inline `.node` files, so it is NOT part
// of agent.js: scripts/build-runtime.ts marks `node-pty` as external and copies the
// package (package.json, lib/*.js, build/Release/pty.node) to
// <RUNTIME_ROOT>/node_modules/node-pty. The agent requires it by the absolute path that
// ptyModulePath() returns. (A plain `require("node-pty")` from /opt/memoh/agent.js would
// find the same copy through Node's parent-directory lookup, but the absolute path keeps
// the dependency on the bundle layout explicit and survives MEMOH_RUNTIME_ROOT.)
// Outside a bundle (unit tests under tsx on the host) it falls back to the project's
// node_modules.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type * as NodePty from "node-pty";

export const RUNTIME_ROOT: string = process.env.MEMOH_RUNTIME_ROOT ?? "/opt/memoh";

/** node, npm and npx for processes the agent spawns (MCP servers); put it first on their PATH. */
export function toolkitBinDir(): string {
  return path.join(RUNTIME_ROOT, "toolkit", "bin");
}

/** What to pass to `require` for node-pty: the bundled copy when present, else "node-pty". */
export function ptyModulePath(): string {
  const bundled = path.join(RUNTIME_ROOT, "node_modules", "node-pty");
  return existsSync(path.join(bundled, "package.json")) ? bundled : "node-pty";
}

let cachedPty: typeof NodePty | undefined;

/** Loads node-pty from ptyModulePath(); throws if the native addon cannot be loaded. */
export function loadNodePty(): typeof NodePty {
  if (cachedPty === undefined) {
    // In the CJS bundle import.meta.url is replaced by agent.js's own file URL (see build-runtime.ts).
    const requireFromHere = createRequire(import.meta.url);
    cachedPty = requireFromHere(ptyModulePath()) as typeof NodePty;
  }
  return cachedPty;
}
