// Image records in containerd's metadata store (name → target descriptor), and
// the one resolver from a target to the manifest, config and layers this host
// runs. Pulling and importing live in pull.ts and import.ts.
import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { Images, type Image as ImagePb } from "../../proto/gen/containerd/services/images/v1/images_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { Content } from "../../proto/gen/containerd/services/content/v1/content_pb.js";
import { ContainerdError, isAlreadyExists, isNotFound, type ContainerdErrorCode } from "./errors.js";
import {
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  chainIds,
  formatPlatform,
  hostPlatform,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  sha256Digest,
  type Platform,
} from "./oci.js";
import type { ImageConfig } from "./spec.js";

export interface ImageTarget {
  mediaType: string;
  digest: string;
  size: number;
}

export interface Image {
  name: string;
  target: ImageTarget;
  labels: Record<string, string>;
  createdAt?: Date;
  updatedAt?: Date;
}

function fromPb(img: ImagePb): Image {
  const t = img.target;
  const out: Image = {
    name: img.name,
    target: { mediaType: t?.mediaType ?? "", digest: t?.digest ?? "", size: Number(t?.size ?? 0n) },
    labels: { ...img.labels },
  };
  if (img.createdAt) out.createdAt = new Date(Number(img.createdAt.seconds) * 1000 + img.createdAt.nanos / 1e6);
  if (img.updatedAt) out.updatedAt = new Date(Number(img.updatedAt.seconds) * 1000 + img.updatedAt.nanos / 1e6);
  return out;
}

function toPbInit(img: Pick<Image, "name" | "target" | "labels">) {
  return {
    name: img.name,
    labels: img.labels,
    target: { mediaType: img.target.mediaType, digest: img.target.digest, size: BigInt(img.target.size), annotations: {} },
  };
}

/** The image named `name`, or undefined. */
export async function getImage(conn: ContainerdConnection, name: string, opts?: ContainerdCallOptions): Promise<Image | undefined> {
  try {
    const res = await conn.unary(Images.method.get, { name }, opts);
    return res.image ? fromPb(res.image) : undefined;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Images matching containerd filters (e.g. `name==docker.io/library/debian:latest`); all when none. */
export async function listImages(conn: ContainerdConnection, filters: string[] = [], opts?: ContainerdCallOptions): Promise<Image[]> {
  const res = await conn.unary(Images.method.list, { filters }, opts);
  return res.images.map(fromPb);
}

/** Removes the image record; its content and snapshots go at the next GC unless still referenced. Returns false when absent. */
export async function removeImage(conn: ContainerdConnection, name: string, options: { sync?: boolean } & ContainerdCallOptions = {}): Promise<boolean> {
  const { sync, ...call } = options;
  try {
    await conn.unary(Images.method.delete, { name, sync: sync ?? false }, call);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Creates the image record, or points an existing one at the new target. */
export async function putImage(
  conn: ContainerdConnection,
  img: Pick<Image, "name" | "target" | "labels">,
  opts?: ContainerdCallOptions,
): Promise<{ image: Image; created: boolean }> {
  try {
    const res = await conn.unary(Images.method.create, { image: toPbInit(img) }, opts);
    return { image: fromPb(res.image ?? (await conn.unary(Images.method.get, { name: img.name }, opts)).image!), created: true };
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
  const mask: Pick<FieldMask, "paths"> = { paths: ["target", ...Object.keys(img.labels).map((k) => `labels.${k}`)] };
  const res = await conn.unary(Images.method.update, { image: toPbInit(img), updateMask: mask }, opts);
  return { image: res.image ? fromPb(res.image) : { ...img }, created: false };
}

export interface ResolvedImage {
  /** The image's target when it is an index, and the position of the chosen manifest in it. */
  index?: { descriptor: ImageTarget; position: number };
  /** The manifest this host runs: the target itself, or the platform's entry of the index. */
  manifest: ImageTarget;
  config: ImageTarget;
  layers: Array<ImageTarget & { diffId: string }>;
  diffIds: string[];
  /** What a container's spec takes from the image (env, command, working dir, user). */
  imageConfig: ImageConfig;
  /** chainID of the top layer: the snapshot containers start from. */
  chainId: string;
}

/** Reads one document of an image (an index, a manifest or a config) by its descriptor. */
export type ImageDocumentReader = (desc: ImageTarget, kind: "manifest" | "config") => Promise<Buffer>;

export interface ResolveImageOptions {
  /** Default: this host's. */
  platform?: Platform;
  /** Code of errors about malformed documents: "invalid_argument" (default) for stored ones, "registry" for a pull's. */
  invalidCode?: ContainerdErrorCode;
}

/**
 * The one image resolver: target → (the platform's manifest of an index) →
 * manifest → config → layers and chainID, reading each document through `read`.
 * Pulls read from the content store and the registry, container creation and
 * imports from the content store; all choose the manifest with selectPlatform,
 * so what a pull unpacked is what a container starts from. Every document is
 * checked against its descriptor's digest and size.
 */
export async function resolveImageFrom(read: ImageDocumentReader, name: string, target: ImageTarget, options: ResolveImageOptions = {}): Promise<ResolvedImage> {
  const platform = options.platform ?? hostPlatform();
  const invalid = (why: string) => new ContainerdError(options.invalidCode ?? "invalid_argument", `image ${name}: ${why}`);
  const load = async (desc: ImageTarget, kind: "manifest" | "config"): Promise<Buffer> => {
    const data = await read(desc, kind);
    const digest = sha256Digest(data);
    if (digest !== desc.digest) throw new ContainerdError("digest_mismatch", `image ${name}: ${kind} ${desc.digest} has digest ${digest}`);
    if (data.length !== desc.size) throw new ContainerdError("digest_mismatch", `image ${name}: ${kind} ${desc.digest} is ${data.length} bytes, its descriptor says ${desc.size}`);
    return data;
  };
  const parse = (data: Buffer, desc: ImageTarget) => {
    try {
      return parseManifest(data, desc.mediaType);
    } catch (err) {
      throw invalid(`${desc.digest}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };

  let manifestDesc = target;
  let parsed = parse(await load(target, "manifest"), target);
  let index: ResolvedImage["index"];
  if (parsed.kind === "index") {
    const chosen = selectPlatform(parsed, platform);
    if (!chosen) {
      const have = parsed.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : "?")).join(", ");
      throw new ContainerdError("not_found", `image ${name} has no manifest for ${formatPlatform(platform)} (it has: ${have || "none"})`);
    }
    index = { descriptor: descriptorOf(target), position: parsed.manifests.indexOf(chosen) };
    manifestDesc = chosen;
    parsed = parse(await load(chosen, "manifest"), chosen);
    if (parsed.kind === "index") throw invalid(`index ${target.digest} points at another index (${chosen.digest}); nested indexes are not supported`);
  }
  const manifest = parsed;
  if (manifest.layers.length === 0) throw invalid(`manifest ${manifestDesc.digest} has no layers`);
  let config: ReturnType<typeof parseImageConfig>;
  try {
    config = parseImageConfig(await load(manifest.config, "config"));
  } catch (err) {
    if (err instanceof ContainerdError) throw err;
    throw invalid(`config ${manifest.config.digest}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (config.diffIds.length !== manifest.layers.length) {
    throw invalid(`config lists ${config.diffIds.length} diff_ids for ${manifest.layers.length} layers`);
  }
  const chain = chainIds(config.diffIds);
  return {
    ...(index ? { index } : {}),
    manifest: { mediaType: manifest.mediaType, digest: manifestDesc.digest, size: manifestDesc.size },
    config: descriptorOf(manifest.config),
    layers: manifest.layers.map((l, i) => ({ ...descriptorOf(l), diffId: config.diffIds[i]! })),
    diffIds: config.diffIds,
    imageConfig: config.config,
    chainId: chain[chain.length - 1]!,
  };
}

function descriptorOf(desc: ImageTarget): ImageTarget {
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
}

/** A stored image resolved from the content store (see resolveImageFrom); "not_found" when a document is missing. */
export async function resolveImage(conn: ContainerdConnection, image: Image, platform: Platform = hostPlatform(), opts?: ContainerdCallOptions): Promise<ResolvedImage> {
  return resolveImageFrom((desc, kind) => readDocument(conn, desc.digest, kind === "config" ? MAX_CONFIG_BYTES : MAX_MANIFEST_BYTES, opts), image.name, image.target, { platform });
}

/**
 * A small blob (manifest, index, config) from the content store, read whole.
 * Capped: containerd is not the only writer of its content store.
 */
export async function readDocument(conn: ContainerdConnection, digest: string, maxBytes: number, call?: ContainerdCallOptions): Promise<Buffer> {
  const stream = conn.serverStream(Content.method.read, { digest, offset: 0n, size: 0n }, call);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream) {
      total += chunk.data.length;
      if (total > maxBytes) {
        stream.cancel();
        throw new ContainerdError("resource_exhausted", `content ${digest} is larger than ${maxBytes} bytes, too large for an image document`);
      }
      chunks.push(Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength));
    }
  } catch (err) {
    throw conn.wrap(err, Content.method.read);
  }
  return Buffer.concat(chunks);
}
