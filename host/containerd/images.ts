// Image records in containerd's metadata store: name → target descriptor.
// Pulling and importing live in pull.ts and import.ts.
import type { FieldMask } from "@bufbuild/protobuf/wkt";
import { Images, type Image as ImagePb } from "../../proto/gen/containerd/services/images/v1/images_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { readContent } from "./content.js";
import { ContainerdError, isAlreadyExists, isNotFound } from "./errors.js";
import { hostPlatform, parseImageConfig, parseManifest, selectPlatform, type ImageIndex, type ImageManifest, type Platform } from "./registry.js";
import { chainIds } from "./unpack.js";

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
  /** The image's manifest (the platform's, when the target is an index). */
  manifest: { mediaType: string; digest: string; size: number };
  config: { mediaType: string; digest: string; size: number };
  layers: Array<{ mediaType: string; digest: string; size: number; diffId: string }>;
  /** chainID of the top layer: the snapshot containers start from. */
  chainId: string;
}

/**
 * Reads an image's manifest (choosing `platform` from an index) and config
 * from the content store; throws "not_found" when a blob is missing.
 */
export async function resolveImage(conn: ContainerdConnection, image: Image, platform: Platform = hostPlatform(), opts?: ContainerdCallOptions): Promise<ResolvedImage> {
  let desc: ImageTarget = image.target;
  let parsed = parseStored(await readContent(conn, desc.digest, opts), desc, image.name);
  if (parsed.kind === "index") {
    const chosen = selectPlatform(parsed, platform);
    if (!chosen) throw new ContainerdError("not_found", `image ${image.name} has no manifest for ${platform.os}/${platform.architecture}`);
    desc = chosen;
    parsed = parseStored(await readContent(conn, desc.digest, opts), desc, image.name);
    if (parsed.kind === "index") throw new ContainerdError("invalid_argument", `image ${image.name}: nested index ${desc.digest} is not supported`);
  }
  const configData = await readContent(conn, parsed.config.digest, opts);
  let diffIds: string[];
  try {
    diffIds = parseImageConfig(configData).diffIds;
  } catch (err) {
    throw new ContainerdError("invalid_argument", `image ${image.name}: config ${parsed.config.digest}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (diffIds.length !== parsed.layers.length) {
    throw new ContainerdError("invalid_argument", `image ${image.name}: config lists ${diffIds.length} diff_ids for ${parsed.layers.length} layers`);
  }
  const layers = parsed.layers.map((l, i) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, diffId: diffIds[i]! }));
  const chain = chainIds(diffIds);
  return {
    manifest: { mediaType: parsed.mediaType, digest: desc.digest, size: desc.size },
    config: { mediaType: parsed.config.mediaType, digest: parsed.config.digest, size: parsed.config.size },
    layers,
    chainId: chain[chain.length - 1] ?? "",
  };
}

function parseStored(data: Buffer, desc: ImageTarget, name: string): ImageManifest | ImageIndex {
  try {
    return parseManifest(data, desc.mediaType);
  } catch (err) {
    throw new ContainerdError("invalid_argument", `image ${name}: blob ${desc.digest}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
