// Containers: metadata objects (spec, runtime, snapshot key, labels); a task runs them.
import { create } from "@bufbuild/protobuf";
import { AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Containers, type Container } from "../../proto/gen/containerd/services/containers/v1/containers_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isNotFound } from "./errors.js";
import { DEFAULT_SNAPSHOTTER, SnapshotService, timestampToDate } from "./snapshots.js";
import type { Spec } from "./spec.js";

export const RUNC_V2_RUNTIME = "io.containerd.runc.v2";
export const OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/** The runc shim's options message (runtime/v2/runc/options.Options), by its bare type name. */
export const RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options";

export interface RuncOptions {
  /** runc --root: where runc keeps its state (default /run/containerd/runc/<namespace>). */
  root?: string;
  /** runc binary name or path. */
  binaryName?: string;
  systemdCgroup?: boolean;
}

/** Encodes runc options by hand (a handful of fields of containerd.runc.v1.Options). */
export function runcOptionsAny(opts: RuncOptions): Any {
  const w = new BinaryWriter();
  if (opts.binaryName) w.tag(6, WireType.LengthDelimited).string(opts.binaryName);
  if (opts.root) w.tag(7, WireType.LengthDelimited).string(opts.root);
  if (opts.systemdCgroup) w.tag(9, WireType.Varint).bool(true);
  return create(AnySchema, { typeUrl: RUNC_OPTIONS_TYPE_URL, value: w.finish() });
}

export function specAny(spec: Spec): Any {
  return create(AnySchema, { typeUrl: OCI_SPEC_TYPE_URL, value: new TextEncoder().encode(JSON.stringify(spec)) });
}

export interface ContainerInfo {
  id: string;
  image: string;
  labels: Record<string, string>;
  runtime: string;
  spec: Spec | undefined;
  snapshotter: string;
  snapshotKey: string;
  createdAt: Date | undefined;
  updatedAt: Date | undefined;
}

export interface CreateContainerOptions {
  id: string;
  spec: Spec;
  /** Image name recorded on the container (informational; keeps nothing alive by itself). */
  image?: string;
  snapshotter?: string;
  /** The container's active snapshot (prepared by the caller). */
  snapshotKey?: string;
  labels?: Record<string, string>;
  runtime?: string;
  runcOptions?: RuncOptions;
}

function toContainerInfo(c: Container | undefined, id: string): ContainerInfo {
  if (!c) throw new ContainerdError("unknown", `containerd returned no container for ${id}`);
  let spec: Spec | undefined;
  if (c.spec && c.spec.typeUrl === OCI_SPEC_TYPE_URL) spec = JSON.parse(new TextDecoder().decode(c.spec.value)) as Spec;
  return {
    id: c.id,
    image: c.image,
    labels: { ...c.labels },
    runtime: c.runtime?.name ?? "",
    spec,
    snapshotter: c.snapshotter,
    snapshotKey: c.snapshotKey,
    createdAt: timestampToDate(c.createdAt),
    updatedAt: timestampToDate(c.updatedAt),
  };
}

/** A containerd filter that matches label `key` equal to `value`, e.g. labels."memoh.bot_id"==bot1. */
export function labelFilter(key: string, value: string): string {
  // containerd's filter language: quoted field names; values quoted unless plain.
  const v = /^[A-Za-z0-9_.\-/:]+$/.test(value) ? value : JSON.stringify(value);
  return `labels.${JSON.stringify(key)}==${v}`;
}

export class ContainerService {
  constructor(readonly conn: ContainerdConnection) {}

  async create(opts: CreateContainerOptions, call?: ContainerdCallOptions): Promise<ContainerInfo> {
    const runtime = opts.runtime ?? RUNC_V2_RUNTIME;
    const res = await this.conn.unary(
      Containers.method.create,
      {
        container: {
          id: opts.id,
          image: opts.image ?? "",
          labels: opts.labels ?? {},
          runtime: { name: runtime, ...(opts.runcOptions ? { options: runcOptionsAny(opts.runcOptions) } : {}) },
          spec: specAny(opts.spec),
          snapshotter: opts.snapshotKey ? (opts.snapshotter ?? DEFAULT_SNAPSHOTTER) : (opts.snapshotter ?? ""),
          snapshotKey: opts.snapshotKey ?? "",
        },
      },
      call,
    );
    return toContainerInfo(res.container, opts.id);
  }

  async get(id: string, call?: ContainerdCallOptions): Promise<ContainerInfo> {
    const res = await this.conn.unary(Containers.method.get, { id }, call);
    return toContainerInfo(res.container, id);
  }

  /** Lists containers; each filter is containerd filter syntax; several filters are OR-ed (containerd semantics). */
  async list(filters: string[] = [], call?: ContainerdCallOptions): Promise<ContainerInfo[]> {
    const res = await this.conn.unary(Containers.method.list, { filters }, call);
    return res.containers.map((c) => toContainerInfo(c, c.id));
  }

  /** Containers whose label `key` is `value`. */
  listByLabel(key: string, value: string, call?: ContainerdCallOptions): Promise<ContainerInfo[]> {
    return this.list([labelFilter(key, value)], call);
  }

  /**
   * Updates labels (replacing the whole set unless `mergeLabels`), the snapshot
   * key, and/or the spec; only the given fields change (field mask).
   */
  async update(
    id: string,
    changes: { labels?: Record<string, string>; mergeLabels?: boolean; snapshotKey?: string; spec?: Spec; image?: string },
    call?: ContainerdCallOptions,
  ): Promise<ContainerInfo> {
    const paths: string[] = [];
    const container: { id: string; labels?: Record<string, string>; snapshotKey?: string; spec?: Any; image?: string } = { id };
    if (changes.labels !== undefined) {
      if (changes.mergeLabels) {
        // containerd merges per key with mask paths labels.<key>.
        for (const k of Object.keys(changes.labels)) paths.push(`labels.${k}`);
      } else paths.push("labels");
      container.labels = changes.labels;
    }
    if (changes.snapshotKey !== undefined) {
      paths.push("snapshotkey");
      container.snapshotKey = changes.snapshotKey;
    }
    if (changes.spec !== undefined) {
      paths.push("spec");
      container.spec = specAny(changes.spec);
    }
    if (changes.image !== undefined) {
      paths.push("image");
      container.image = changes.image;
    }
    if (paths.length === 0) return this.get(id, call);
    const res = await this.conn.unary(Containers.method.update, { container, updateMask: { paths } }, call);
    return toContainerInfo(res.container, id);
  }

  /**
   * Deletes the container; with `removeSnapshot`, its snapshot too (a missing one is
   * fine), before the container, as containerd's own client does: once the container is
   * gone nothing references a snapshot without a GC root, and a GC that takes it then
   * deletes it without unlinking it from its parent, which then refuses removal ("with
   * child") for good. Its task must be gone first.
   */
  async delete(id: string, opts: { removeSnapshot?: boolean; ignoreNotFound?: boolean } = {}, call?: ContainerdCallOptions): Promise<void> {
    if (opts.removeSnapshot) {
      let info: ContainerInfo;
      try {
        info = await this.get(id, call);
      } catch (err) {
        if (!(opts.ignoreNotFound && isNotFound(err))) throw err;
        return;
      }
      if (info.snapshotKey) {
        await new SnapshotService(this.conn, info.snapshotter || DEFAULT_SNAPSHOTTER).remove(info.snapshotKey, { ...call, ignoreNotFound: true });
      }
    }
    try {
      await this.conn.unary(Containers.method.delete, { id }, call);
    } catch (err) {
      if (!(opts.ignoreNotFound && isNotFound(err))) throw err;
    }
  }
}
