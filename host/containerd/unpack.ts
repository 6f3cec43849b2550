// Unpacking image layers into a snapshotter: for each layer, Prepare on top of
// the previous chainID, Diff.Apply the layer blob, check that the applied
// digest is the config's diffID, Commit under the layer's chainID.
import { randomBytes } from "node:crypto";
import { Diff } from "../../proto/gen/containerd/services/diff/v1/diff_pb.js";
import { Snapshots } from "../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError, isAlreadyExists, isNotFound } from "./errors.js";
import { chainIds } from "./oci.js";

export interface LayerToUnpack {
  mediaType: string;
  digest: string;
  size: number;
  /** sha256 of the uncompressed layer (config rootfs.diff_ids[i]). */
  diffId: string;
}

export async function snapshotExists(conn: ContainerdConnection, snapshotter: string, key: string, opts?: ContainerdCallOptions): Promise<boolean> {
  try {
    await conn.unary(Snapshots.method.stat, { snapshotter, key }, opts);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

export interface UnpackOptions {
  snapshotter: string;
  /** Run under this lease (the pull's), so GC leaves the new snapshots alone until the image owns them. */
  lease?: string;
  /** Waits for layer i's blob to be in the content store (pulls unpack while later layers download). */
  ready?: (index: number) => Promise<void>;
  /** Called with every snapshot this unpack committed, so a failed pull can remove them. */
  onCommitted?: (chainId: string) => void;
  signal?: AbortSignal;
}

/** Unpacks layers bottom first; returns the chainID of the top layer. Layers already unpacked are skipped. */
export async function unpackLayers(conn: ContainerdConnection, layers: LayerToUnpack[], opts: UnpackOptions): Promise<string> {
  if (layers.length === 0) throw new ContainerdError("invalid_argument", "image has no layers to unpack");
  const chain = chainIds(layers.map((l) => l.diffId));
  const call: ContainerdCallOptions = { ...(opts.lease ? { lease: opts.lease } : {}), ...(opts.signal ? { signal: opts.signal } : {}) };
  const { snapshotter } = opts;
  // Find the highest layer already unpacked; everything below it exists too.
  let first = layers.length;
  while (first > 0 && !(await snapshotExists(conn, snapshotter, chain[first - 1]!, call))) first--;

  for (let i = first; i < layers.length; i++) {
    const layer = layers[i]!;
    const chainId = chain[i]!;
    const parent = i === 0 ? "" : chain[i - 1]!;
    if (opts.ready) await opts.ready(i);
    const key = `extract-${randomBytes(6).toString("hex")}-${chainId}`;
    const prepared = await conn.unary(Snapshots.method.prepare, { snapshotter, key, parent, labels: {} }, call);
    try {
      const applied = await conn.unary(
        Diff.method.apply,
        { diff: { mediaType: layer.mediaType, digest: layer.digest, size: BigInt(layer.size), annotations: {} }, mounts: prepared.mounts },
        { ...call, timeoutMs: 10 * 60_000 },
      );
      const got = applied.applied?.digest ?? "";
      if (got !== layer.diffId) {
        throw new ContainerdError(
          "digest_mismatch",
          `layer ${i} (${layer.digest}): unpacked content has digest ${got || "(none)"}, the image config's diff_id is ${layer.diffId}`,
        );
      }
      try {
        await conn.unary(Snapshots.method.commit, { snapshotter, name: chainId, key, labels: {} }, call);
        opts.onCommitted?.(chainId);
      } catch (err) {
        // Another pull committed the same layer meanwhile: theirs is as good as ours.
        if (!isAlreadyExists(err)) throw err;
        await removeSnapshot(conn, snapshotter, key, call);
      }
    } catch (err) {
      await removeSnapshot(conn, snapshotter, key, call).catch(() => {});
      throw err;
    }
  }
  return chain[chain.length - 1]!;
}

export async function removeSnapshot(conn: ContainerdConnection, snapshotter: string, key: string, opts?: ContainerdCallOptions): Promise<void> {
  try {
    await conn.unary(Snapshots.method.remove, { snapshotter, key }, opts);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}
