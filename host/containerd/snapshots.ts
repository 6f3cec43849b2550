// Snapshots: prepare (active, writable), view (read-only), commit, remove, stat,
// list, usage; and mounting a snapshot's mounts on the host, read-only.
//
// GC protection of committed snapshots: commit() sets the label
// `containerd.io/gc.root`, which makes the snapshot a GC root of its own; it
// stays until it is removed explicitly. (A lease would work too, but it would
// be one more object to keep track of per version; the label lives and dies
// with the snapshot.)
import { execFile } from "node:child_process";
import fs from "node:fs";
import { promisify } from "node:util";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Kind, Snapshots, type Info } from "../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isNotFound } from "./errors.js";

const run = promisify(execFile);

export const DEFAULT_SNAPSHOTTER = "overlayfs";
export const GC_ROOT_LABEL = "containerd.io/gc.root";

/** A containerd mount: what to pass to mount(8) to get the snapshot's filesystem. */
export interface MountSpec {
  type: string;
  source: string;
  options: string[];
}

export type SnapshotKind = "view" | "active" | "committed" | "unknown";

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
  createdAt: Date | undefined;
  updatedAt: Date | undefined;
}

export interface SnapshotUsage {
  size: bigint;
  inodes: bigint;
}

export interface SnapshotOptions extends ContainerdCallOptions {
  /** Default: the snapshotter of the Snapshots object. */
  snapshotter?: string;
  labels?: Record<string, string>;
}

function kindName(kind: Kind): SnapshotKind {
  switch (kind) {
    case Kind.VIEW:
      return "view";
    case Kind.ACTIVE:
      return "active";
    case Kind.COMMITTED:
      return "committed";
    default:
      return "unknown";
  }
}

export function timestampToDate(ts: Timestamp | undefined): Date | undefined {
  return ts ? new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)) : undefined;
}

function toInfo(info: Info | undefined, key: string): SnapshotInfo {
  if (!info) throw new ContainerdError("unknown", `containerd returned no info for snapshot ${key}`);
  return {
    name: info.name,
    parent: info.parent,
    kind: kindName(info.kind),
    labels: { ...info.labels },
    createdAt: timestampToDate(info.createdAt),
    updatedAt: timestampToDate(info.updatedAt),
  };
}

function toMounts(mounts: ReadonlyArray<{ type: string; source: string; options: string[] }>): MountSpec[] {
  return mounts.map((m) => ({ type: m.type, source: m.source, options: [...m.options] }));
}

export class SnapshotService {
  constructor(
    readonly conn: ContainerdConnection,
    readonly snapshotter = DEFAULT_SNAPSHOTTER,
  ) {}

  /** A writable (active) snapshot `key` on top of `parent` ("" for an empty one). */
  async prepare(key: string, parent: string, opts: SnapshotOptions = {}): Promise<MountSpec[]> {
    const res = await this.conn.unary(
      Snapshots.method.prepare,
      { snapshotter: opts.snapshotter ?? this.snapshotter, key, parent, labels: opts.labels ?? {} },
      opts,
    );
    return toMounts(res.mounts);
  }

  /** A read-only view `key` of the committed snapshot `parent`. */
  async view(key: string, parent: string, opts: SnapshotOptions = {}): Promise<MountSpec[]> {
    const res = await this.conn.unary(
      Snapshots.method.view,
      { snapshotter: opts.snapshotter ?? this.snapshotter, key, parent, labels: opts.labels ?? {} },
      opts,
    );
    return toMounts(res.mounts);
  }

  async mounts(key: string, opts: SnapshotOptions = {}): Promise<MountSpec[]> {
    const res = await this.conn.unary(Snapshots.method.mounts, { snapshotter: opts.snapshotter ?? this.snapshotter, key }, opts);
    return toMounts(res.mounts);
  }

  /**
   * Commits the active snapshot `key` as `name` (the active one is gone afterwards).
   * The result carries `containerd.io/gc.root` unless `gcRoot` is false, so GC keeps it.
   */
  async commit(name: string, key: string, opts: SnapshotOptions & { gcRoot?: boolean } = {}): Promise<void> {
    const labels = { ...opts.labels };
    if (opts.gcRoot !== false) labels[GC_ROOT_LABEL] = new Date().toISOString();
    await this.conn.unary(Snapshots.method.commit, { snapshotter: opts.snapshotter ?? this.snapshotter, name, key, labels }, opts);
  }

  async remove(key: string, opts: SnapshotOptions & { ignoreNotFound?: boolean } = {}): Promise<void> {
    try {
      await this.conn.unary(Snapshots.method.remove, { snapshotter: opts.snapshotter ?? this.snapshotter, key }, opts);
    } catch (err) {
      if (!(opts.ignoreNotFound && isNotFound(err))) throw err;
    }
  }

  async stat(key: string, opts: SnapshotOptions = {}): Promise<SnapshotInfo> {
    const res = await this.conn.unary(Snapshots.method.stat, { snapshotter: opts.snapshotter ?? this.snapshotter, key }, opts);
    return toInfo(res.info, key);
  }

  /** Sets (or replaces) the given labels of `key`; other labels stay. */
  async setLabels(key: string, labels: Record<string, string>, opts: SnapshotOptions = {}): Promise<SnapshotInfo> {
    const res = await this.conn.unary(
      Snapshots.method.update,
      {
        snapshotter: opts.snapshotter ?? this.snapshotter,
        info: { name: key, labels },
        updateMask: { paths: Object.keys(labels).map((k) => `labels.${k}`) },
      },
      opts,
    );
    return toInfo(res.info, key);
  }

  /** Whether `key` exists and is an active (writable) snapshot. */
  async isActive(key: string, opts: SnapshotOptions = {}): Promise<boolean> {
    try {
      return (await this.stat(key, opts)).kind === "active";
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** Whether `key` exists. */
  async exists(key: string, opts: SnapshotOptions = {}): Promise<boolean> {
    try {
      await this.stat(key, opts);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /**
   * Lists snapshots; filters use containerd's syntax (e.g. `parent==sha256:...`, `labels."x"==y`).
   * The whole listing has the connection's default deadline unless `timeoutMs` says otherwise.
   */
  async list(filters: string[] = [], opts: SnapshotOptions = {}): Promise<SnapshotInfo[]> {
    const stream = this.conn.listStream(Snapshots.method.list, { snapshotter: opts.snapshotter ?? this.snapshotter, filters }, opts);
    const out: SnapshotInfo[] = [];
    try {
      for await (const chunk of stream) for (const info of chunk.info) out.push(toInfo(info, info.name));
    } catch (err) {
      throw this.conn.wrap(err, Snapshots.method.list);
    }
    return out;
  }

  async usage(key: string, opts: SnapshotOptions = {}): Promise<SnapshotUsage> {
    const res = await this.conn.unary(Snapshots.method.usage, { snapshotter: opts.snapshotter ?? this.snapshotter, key }, opts);
    return { size: res.size, inodes: res.inodes };
  }
}

// ------------------------------------------------------------------ host mounts

function optionValue(options: string[], name: string): string | undefined {
  const prefix = `${name}=`;
  return options.find((o) => o.startsWith(prefix))?.slice(prefix.length);
}

/**
 * The same filesystem as `mounts`, read-only: bind mounts get `ro`; an overlay
 * loses its upperdir/workdir, and the upperdir becomes the top lowerdir (an
 * active snapshot's writes stay visible). Overlayfs needs two lowerdirs without
 * an upperdir, so a single layer becomes a read-only bind mount of it.
 */
export function readOnlyMounts(mounts: MountSpec[]): MountSpec[] {
  return mounts.map((m) => {
    if (m.type === "bind" || m.type === "rbind") {
      const options = m.options.filter((o) => o !== "rw" && o !== "ro");
      if (!options.includes("bind") && !options.includes("rbind")) options.unshift(m.type === "rbind" ? "rbind" : "bind");
      return { type: "bind", source: m.source, options: [...options, "ro"] };
    }
    if (m.type === "overlay") {
      const upper = optionValue(m.options, "upperdir");
      const lower = optionValue(m.options, "lowerdir");
      const lowers = [...(upper ? [upper] : []), ...(lower ? lower.split(":") : [])];
      if (lowers.length === 0) throw new ContainerdError("invalid_argument", `overlay mount without lowerdir or upperdir: ${m.options.join(",")}`);
      if (lowers.length === 1) return { type: "bind", source: lowers[0]!, options: ["bind", "ro"] };
      const rest = m.options.filter((o) => !/^(upperdir|workdir|lowerdir)=/.test(o) && o !== "rw" && o !== "ro");
      return { type: "overlay", source: m.source || "overlay", options: [`lowerdir=${lowers.join(":")}`, ...rest, "ro"] };
    }
    return { ...m, options: [...m.options.filter((o) => o !== "rw" && o !== "ro"), "ro"] };
  });
}

/** Mounts a snapshot's mounts read-only at `target` (created if missing) with mount(8). */
export async function mountReadOnly(mounts: MountSpec[], target: string): Promise<void> {
  if (mounts.length === 0) throw new ContainerdError("invalid_argument", "no mounts to mount");
  fs.mkdirSync(target, { recursive: true });
  const ro = readOnlyMounts(mounts);
  const done: number[] = [];
  try {
    for (const [i, m] of ro.entries()) {
      const args = m.type === "bind" ? ["-o", m.options.join(","), m.source, target] : ["-t", m.type, "-o", m.options.join(","), m.source, target];
      try {
        await run("mount", args);
      } catch (err) {
        const stderr = (err as { stderr?: string }).stderr?.trim() ?? String(err);
        throw new ContainerdError("unknown", `mount ${args.join(" ")} failed: ${stderr}`, { cause: err });
      }
      done.push(i);
    }
  } catch (err) {
    for (const _ of done) await unmount(target).catch(() => {});
    throw err;
  }
}

/**
 * Unmounts `target` (every mount stacked on it); a target that is not mounted is fine.
 * `lazy` detaches it at once and lets it go when nothing uses it any more (umount -l).
 */
export async function unmount(target: string, opts: { lazy?: boolean } = {}): Promise<void> {
  for (let i = 0; i < 16; i++) {
    if (!isMountPoint(target)) return;
    try {
      await run("umount", opts.lazy ? ["-l", target] : [target]);
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr?.trim() ?? String(err);
      if (/not mounted/.test(stderr)) return;
      throw new ContainerdError("unknown", `umount ${target} failed: ${stderr}`, { cause: err });
    }
  }
}

/** The mount points of a mountinfo text (proc(5)): field 5, with space, tab, newline and backslash as octal escapes. */
export function parseMountPoints(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => {
      const escaped = l.split(" ")[4] ?? "";
      // Escapes stand for single bytes; the path is decoded as UTF-8 once they are bytes again.
      return Buffer.from(escaped.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), "latin1").toString("utf8");
    });
}

/** Mount points of this process's mount namespace, from /proc/self/mountinfo. */
export function mountPoints(): string[] {
  return parseMountPoints(fs.readFileSync("/proc/self/mountinfo", "latin1"));
}

/** Whether `target` (symlinks resolved) is a mount point. */
export function isMountPoint(target: string): boolean {
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch {
    return false;
  }
  return mountPoints().includes(real);
}
