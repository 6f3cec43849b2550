// Pulling an image, as containerd's client does it: under a lease, resolve the
// reference with the registry, write index/manifest/config/layers into the
// content store (skipping what is there), label them for GC, unpack the layers
// into the snapshotter, then create (or update) the image record. A failed
// pull removes what it created: no image, lease or partial snapshot remains.
import { randomBytes } from "node:crypto";
import { Leases } from "../../proto/gen/containerd/services/leases/v1/leases_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { contentInfo, deleteContent, updateContentLabels, writeBlob, type BlobSource } from "./content.js";
import { ContainerdError, isNotFound } from "./errors.js";
import { getImage, putImage, readDocument, resolveImage, resolveImageFrom, type Image, type ImageTarget } from "./images.js";
import { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, hostPlatform, parseManifest, type Descriptor, type Platform } from "./oci.js";
import { formatReference, parseReference, type ImageReference } from "./reference.js";
import { RegistryClient, type RegistryOptions } from "./registry.js";
import { removeSnapshot, snapshotExists, unpackLayers } from "./unpack.js";

export type PullPolicy = "if_not_present" | "always" | "never";
export const PULL_POLICIES: readonly PullPolicy[] = ["if_not_present", "always", "never"];

export const LABEL_UNCOMPRESSED = "containerd.io/uncompressed";
export const LABEL_GC_EXPIRE = "containerd.io/gc.expire";
const gcContent = (suffix: string) => `containerd.io/gc.ref.content.${suffix}`;
const gcSnapshot = (snapshotter: string) => `containerd.io/gc.ref.snapshot.${snapshotter}`;

export interface PullOptions {
  /** Default "overlayfs". */
  snapshotter?: string;
  /** Default: this host's (linux/amd64 here). */
  platform?: Platform;
  /** A client to reuse (its byte counter, tokens and connections), or options for a new one. */
  registry?: RegistryClient | RegistryOptions;
  /** Default "if_not_present". */
  policy?: PullPolicy;
  /** Per blob: bytes in the content store so far, of total. */
  onProgress?: (digest: string, offset: number, total: number) => void;
  /** Blobs downloaded at once (default 3). */
  concurrency?: number;
}

export interface PullResult {
  image: Image;
  /** Full normalised name, e.g. docker.io/library/debian:latest. */
  name: string;
  manifestDigest: string;
  configDigest: string;
  /** The top layer's chainID: the snapshot a container is prepared from. */
  chainId: string;
  snapshotter: string;
  /** False when the policy let an image already present stand. */
  pulled: boolean;
  /** Body bytes received from the registry by this pull. */
  bytesFetched: number;
  /** Layer blobs that were already in the content store. */
  layersSkipped: number;
}

interface Created {
  content: string[];
  snapshots: string[];
}

/** Pulls `reference` into containerd; see PullOptions. Errors are ContainerdErrors with clear messages. */
export async function pullImage(conn: ContainerdConnection, reference: string, options: PullOptions = {}): Promise<PullResult> {
  const ref = parseReference(reference);
  const name = formatReference(ref);
  const snapshotter = options.snapshotter ?? "overlayfs";
  const platform = options.platform ?? hostPlatform();
  const policy = options.policy ?? "if_not_present";
  if (!PULL_POLICIES.includes(policy)) throw new ContainerdError("invalid_argument", `pull policy ${JSON.stringify(policy)} is not one of ${PULL_POLICIES.join(", ")}`);

  if (policy !== "always") {
    const existing = await getImage(conn, name);
    if (existing) {
      const local = await resolveImage(conn, existing, platform).catch(() => undefined);
      if (local && (await snapshotExists(conn, snapshotter, local.chainId))) {
        return { image: existing, name, manifestDigest: local.manifest.digest, configDigest: local.config.digest, chainId: local.chainId, snapshotter, pulled: false, bytesFetched: 0, layersSkipped: local.layers.length };
      }
    }
    if (policy === "never") {
      throw new ContainerdError(
        "not_found",
        existing
          ? `image ${name} is present but not unpacked for snapshotter ${snapshotter}, and the pull policy is "never"`
          : `image ${name} is not present and the pull policy is "never": import it or change the policy`,
      );
    }
  }

  const ownRegistry = !(options.registry instanceof RegistryClient);
  const registry = options.registry instanceof RegistryClient ? options.registry : new RegistryClient(options.registry);
  const bytesBefore = registry.bytesFetched;
  const leaseId = `memoh-pull-${randomBytes(8).toString("hex")}`;
  // The expiry is a safety net: if this process dies mid-pull, GC still reclaims the lease.
  await conn.unary(Leases.method.create, { id: leaseId, labels: { [LABEL_GC_EXPIRE]: new Date(Date.now() + 3600_000).toISOString() } });
  const call: ContainerdCallOptions = { lease: leaseId };
  const created: Created = { content: [], snapshots: [] };
  try {
    const result = await pullUnderLease(conn, registry, ref, name, { snapshotter, platform, call, created, options });
    return { ...result, bytesFetched: registry.bytesFetched - bytesBefore };
  } catch (err) {
    await removeCreated(conn, snapshotter, created);
    throw err;
  } finally {
    await conn.unary(Leases.method.delete, { id: leaseId, sync: false }).catch(() => {});
    if (ownRegistry) await registry.close().catch(() => {});
  }
}

async function removeCreated(conn: ContainerdConnection, snapshotter: string, created: Created): Promise<void> {
  // Top first: a snapshot with children cannot be removed.
  for (const key of created.snapshots.reverse()) await removeSnapshot(conn, snapshotter, key).catch(() => {});
  for (const digest of created.content) await deleteContent(conn, digest).catch(() => {});
}

interface PullContext {
  snapshotter: string;
  platform: Platform;
  call: ContainerdCallOptions;
  created: Created;
  options: PullOptions;
}

/** A document of the image as a pull holds it: its bytes, and whether the content store already has them. */
interface PulledDocument {
  data: Buffer;
  stored: boolean;
}

/** A manifest or index: from the content store when present, else from the registry (digest checked). */
async function loadManifest(
  conn: ContainerdConnection,
  registry: RegistryClient,
  ref: ImageReference,
  desc: Descriptor | undefined,
  call: ContainerdCallOptions,
): Promise<PulledDocument & { desc: ImageTarget }> {
  const data = desc ? await readStored(conn, desc.digest, MAX_MANIFEST_BYTES, call) : undefined;
  if (desc && data) {
    try {
      parseManifest(data, desc.mediaType);
      return { desc, data, stored: true };
    } catch {
      // unreadable local copy: fetch it again
    }
  }
  const fetched = desc ? await registry.fetchManifest(ref, desc.digest, desc) : await registry.resolve(ref);
  return { desc: fetched.descriptor, data: fetched.data, stored: false };
}

/**
 * A blob from the content store, first added to the pull's lease so GC (which
 * may run at any time, e.g. after an image was removed) keeps it; undefined when absent.
 */
async function readStored(conn: ContainerdConnection, digest: string, maxBytes: number, call: ContainerdCallOptions): Promise<Buffer | undefined> {
  if (!(await contentInfo(conn, digest, call))) return undefined;
  try {
    if (call.lease) await conn.unary(Leases.method.addResource, { id: call.lease, resource: { id: digest, type: "content" } });
    return await readDocument(conn, digest, maxBytes, call);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

function bufferSource(data: Buffer): BlobSource {
  return async () => ({
    from: 0,
    chunks: (async function* () {
      yield data;
    })(),
  });
}

/** Writes a small blob we hold in memory, or sets its labels when the store has it. */
async function storeSmall(
  conn: ContainerdConnection,
  ctx: PullContext,
  desc: ImageTarget,
  data: Buffer,
  stored: boolean,
  labels: Record<string, string>,
): Promise<void> {
  if (stored) {
    await updateContentLabels(conn, desc.digest, labels, ctx.call);
    return;
  }
  const res = await writeBlob(conn, bufferSource(data), { ref: `memoh-${desc.digest}`, digest: desc.digest, size: desc.size, labels, call: ctx.call, name: `blob ${desc.digest}` });
  if (res.existed) await updateContentLabels(conn, desc.digest, labels, ctx.call);
  else ctx.created.content.push(desc.digest);
  ctx.options.onProgress?.(desc.digest, desc.size, desc.size);
}

async function pullUnderLease(
  conn: ContainerdConnection,
  registry: RegistryClient,
  ref: ImageReference,
  name: string,
  ctx: PullContext,
): Promise<Omit<PullResult, "bytesFetched">> {
  const { call, snapshotter } = ctx;
  // HEAD first: with the digest in hand, a manifest already stored is not downloaded again.
  const head = await registry.headManifest(ref);
  const top = await loadManifest(conn, registry, ref, head, call);
  // Every document the resolver reads, kept to be stored (or labelled) once the layers are in.
  const documents = new Map<string, PulledDocument>([[top.desc.digest, top]]);
  const resolved = await resolveImageFrom(
    async (desc, kind) => {
      let doc = documents.get(desc.digest);
      if (!doc && kind === "config") {
        const stored = await readStored(conn, desc.digest, MAX_CONFIG_BYTES, call);
        doc = { data: stored ?? (await registry.fetchSmallBlob(ref, desc)), stored: stored !== undefined };
      } else if (!doc) {
        doc = await loadManifest(conn, registry, ref, desc, call);
      }
      documents.set(desc.digest, doc);
      return doc.data;
    },
    name,
    top.desc,
    { platform: ctx.platform, invalidCode: "registry" },
  );
  const document = (digest: string) => documents.get(digest)!;
  const { layers } = resolved;

  // Layers: downloaded a few at a time, unpacked bottom-up as soon as each is stored.
  let layersSkipped = 0;
  const downloads = new Map<string, Promise<void>>();
  const limit = limiter(ctx.options.concurrency ?? 3);
  for (const [i, layer] of layers.entries()) {
    if (downloads.has(layer.digest)) continue;
    const labels = { [LABEL_UNCOMPRESSED]: layer.diffId };
    const task = limit(async () => {
      const res = await writeBlob(conn, (offset) => registry.openBlob(ref, layer, offset), {
        ref: `memoh-${layer.digest}`,
        digest: layer.digest,
        size: layer.size,
        labels,
        name: `layer ${i} (${layer.digest}) of ${name}`,
        call,
        ...(ctx.options.onProgress ? { onProgress: (offset: number, total: number) => ctx.options.onProgress!(layer.digest, offset, total) } : {}),
      });
      if (res.existed) {
        layersSkipped++;
        const info = await contentInfo(conn, layer.digest, call);
        if (info?.labels[LABEL_UNCOMPRESSED] !== layer.diffId) await updateContentLabels(conn, layer.digest, labels, call);
      } else {
        ctx.created.content.push(layer.digest);
      }
    });
    task.catch(() => {}); // observed below; a failure before its turn must not be an unhandled rejection
    downloads.set(layer.digest, task);
  }
  let chainId: string;
  try {
    chainId = await unpackLayers(conn, layers, {
      snapshotter,
      lease: call.lease!,
      ready: (i) => downloads.get(layers[i]!.digest)!,
      onCommitted: (id) => ctx.created.snapshots.push(id),
    });
    await Promise.all(downloads.values());
  } finally {
    // Nothing may still be writing when the caller cleans up.
    await Promise.allSettled(downloads.values());
  }

  // Parents after children, each pointing at what GC must keep.
  const config = document(resolved.config.digest);
  await storeSmall(conn, ctx, resolved.config, config.data, config.stored, { [gcSnapshot(snapshotter)]: chainId });
  const manifestLabels: Record<string, string> = { [gcContent("config")]: resolved.config.digest };
  for (const [i, l] of layers.entries()) manifestLabels[gcContent(`l.${i}`)] = l.digest;
  const manifest = document(resolved.manifest.digest);
  await storeSmall(conn, ctx, resolved.manifest, manifest.data, manifest.stored, manifestLabels);
  if (resolved.index) {
    const index = document(resolved.index.descriptor.digest);
    await storeSmall(conn, ctx, resolved.index.descriptor, index.data, index.stored, { [gcContent(`m.${resolved.index.position}`)]: resolved.manifest.digest });
  }

  const target = resolved.index?.descriptor ?? resolved.manifest;
  const { image } = await putImage(conn, { name, target, labels: {} }, call);
  return { image, name, manifestDigest: resolved.manifest.digest, configDigest: resolved.config.digest, chainId, snapshotter, pulled: true, layersSkipped };
}

function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const queue: Array<() => void> = [];
  return <T>(fn: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      const run = () => {
        active++;
        fn().then(resolve, reject).finally(() => {
          active--;
          queue.shift()?.();
        });
      };
      if (active < n) run();
      else queue.push(run);
    });
}
