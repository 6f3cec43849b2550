// The places DeleteFile and Rename must never take away: the data dir, the
// agent's socket and its dir, the runtime bundle, and "/". Names are not
// enough to recognise them ("/data/.", "/data/../data", "link-to-root/data"
// and a bind mount all reach /data), so the checks compare real paths
// (symlinked parents resolved) and device + inode numbers.
import fs from "node:fs/promises";
import path from "node:path";
import type { AgentContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { FsPath } from "../paths.js";
import { RUNTIME_ROOT } from "../runtime-paths.js";
import { isErrno } from "./errno.js";

export interface ProtectedPlace {
  /** "the data dir", "the agent's socket dir", … */
  readonly what: string;
  readonly real: FsPath;
  readonly dev: number;
  readonly ino: number;
}

/** The protected places that exist now, each at its real path. */
export async function protectedPlaces(ctx: AgentContext): Promise<ProtectedPlace[]> {
  const candidates: Array<{ what: string; at: string }> = [
    { what: "the data dir", at: ctx.dataDir },
    { what: "the runtime bundle", at: RUNTIME_ROOT },
  ];
  if (ctx.listen.startsWith("unix:")) {
    const socket = ctx.listen.slice("unix:".length);
    candidates.push({ what: "the agent's socket", at: socket }, { what: "the agent's socket dir", at: path.dirname(socket) });
  }
  const places: ProtectedPlace[] = [];
  for (const { what, at } of candidates) {
    try {
      const real = new FsPath(await fs.realpath(at, { encoding: "buffer" }));
      const st = await fs.lstat(real.bytes);
      places.push({ what, real, dev: st.dev, ino: st.ino });
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw err;
    }
  }
  return places;
}

/**
 * The real path of `p` without following its last component: what unlink,
 * rmdir and rename act on. Undefined when its parent does not exist.
 */
export async function realLocation(p: FsPath): Promise<FsPath | undefined> {
  if (p.isRoot) return p;
  try {
    const parent = new FsPath(await fs.realpath(p.parent().bytes, { encoding: "buffer" }));
    return parent.child(p.name);
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return undefined;
    throw err;
  }
}

/** "dev:ino" of every place, to check directories met during a walk. */
export function inodeKeys(places: readonly ProtectedPlace[]): Set<string> {
  return new Set(places.map((p) => `${p.dev}:${p.ino}`));
}

/**
 * Refuses (INVALID_ARGUMENT) to remove or move `target` when it is "/", a
 * protected place, or holds one. The last component is not followed: a
 * symlink to the data dir is only a link, and removing it is fine.
 */
export async function refuseProtected(
  ctx: AgentContext,
  target: FsPath,
  opts: { verb: "delete" | "move" | "replace"; field?: string },
): Promise<ProtectedPlace[]> {
  const prefix = opts.field ? `${opts.field}: ` : "";
  const places = await protectedPlaces(ctx);
  const real = await realLocation(target);
  if (target.isRoot || real?.isRoot) throw invalidArgument(`${prefix}refusing to ${opts.verb} /`);
  const st = await fs.lstat(target.bytes).catch(() => undefined);
  for (const place of places) {
    const same = (st !== undefined && st.dev === place.dev && st.ino === place.ino) || (real !== undefined && real.equals(place.real));
    if (!same) continue;
    if (place.what === "the data dir" && opts.verb === "delete") {
      throw invalidArgument(`${prefix}refusing to delete the data dir ${place.real} itself; delete its entries instead`);
    }
    throw invalidArgument(`${prefix}refusing to ${opts.verb} ${target}: it is ${place.what} ${place.real}`);
  }
  for (const place of places) {
    if (real?.holds(place.real)) {
      throw invalidArgument(`${prefix}refusing to ${opts.verb} ${target}: it holds ${place.what} ${place.real}`);
    }
  }
  return places;
}
