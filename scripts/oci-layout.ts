// OCI image layouts built from files in memory, with no network: layers as
// reproducible gzip tars, an image's config and manifest, and the layout tar that
// `ctr images import` reads (and back). Every blob comes with its digest and bytes,
// so a registry-push helper can upload them as they are. scripts/image-builder.ts
// builds the test images and the default workspace image with these.

import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tarStream, { type Header, type Pack } from "tar-stream";

export const MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

/** containerd's own annotation; `ctr images import` takes it as the full image name. */
export const ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name";
export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Fixed timestamps keep the layers byte-for-byte reproducible, so digests only change when files do.
const EPOCH = new Date("2024-01-01T00:00:00Z");

export interface Blob {
  mediaType: string;
  /** "sha256:<hex>" */
  digest: string;
  size: number;
  data: Buffer;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string };
  annotations?: Record<string, string>;
}

export interface OciImage {
  /** Full reference, e.g. "memoh.test/busybox:latest". */
  ref: string;
  manifest: Blob;
  config: Blob;
  /** gzip-compressed layer blobs, bottom first. */
  layers: Blob[];
  /** sha256 of each uncompressed layer tar (config rootfs.diff_ids). */
  diffIds: string[];
}

export type LayerEntry =
  | { path: string; type: "dir"; mode: number }
  | { path: string; type: "file"; mode: number; data: Buffer }
  | { path: string; type: "symlink"; target: string };

export interface ImageConfigOptions {
  env?: string[];
  cmd?: string[];
  entrypoint?: string[];
  workingDir?: string;
  /** The image's USER: a name or uid, optionally ":group". */
  user?: string;
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export function makeBlob(mediaType: string, data: Buffer): Blob {
  return { mediaType, digest: sha256(data), size: data.length, data };
}

function jsonBlob(mediaType: string, value: unknown): Blob {
  return makeBlob(mediaType, Buffer.from(JSON.stringify(value)));
}

async function packTar(write: (pack: Pack) => Promise<void>): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  await write(pack);
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

function addEntry(pack: Pack, header: Partial<Header> & { name: string }, data?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const cb = (err?: Error | null) => (err ? reject(err) : resolve());
    if (data === undefined) pack.entry(header, cb);
    else pack.entry(header, data, cb);
  });
}

/** Builds one gzip layer; entries are sorted so parents come first and output is reproducible. */
export async function buildLayer(entries: Iterable<LayerEntry>): Promise<{ blob: Blob; diffId: string }> {
  const byPath = new Map<string, LayerEntry>();
  for (const e of entries) byPath.set(e.path.replace(/^\/+/, "").replace(/\/+$/, ""), e);
  const names = [...byPath.keys()].filter((n) => n !== "").sort();
  const tar = await packTar(async (pack) => {
    for (const name of names) {
      const e = byPath.get(name)!;
      const common = { name, uid: 0, gid: 0, uname: "root", gname: "root", mtime: EPOCH };
      if (e.type === "dir") await addEntry(pack, { ...common, type: "directory", mode: e.mode });
      else if (e.type === "symlink") await addEntry(pack, { ...common, type: "symlink", mode: 0o777, linkname: e.target });
      else await addEntry(pack, { ...common, type: "file", mode: e.mode, size: e.data.length }, e.data);
    }
  });
  return { blob: makeBlob(MEDIA_TYPES.layerGzip, zlib.gzipSync(tar)), diffId: sha256(tar) };
}

/** Assembles config + manifest (linux/amd64) around already-built layers. */
export function buildOciImage(
  ref: string,
  layers: Array<{ blob: Blob; diffId: string }>,
  options: ImageConfigOptions = {},
): OciImage {
  const diffIds = layers.map((l) => l.diffId);
  const config = jsonBlob(MEDIA_TYPES.config, {
    created: EPOCH.toISOString(),
    architecture: "amd64",
    os: "linux",
    config: {
      Env: options.env ?? [`PATH=${DEFAULT_PATH}`],
      Cmd: options.cmd ?? ["/bin/sh"],
      WorkingDir: options.workingDir ?? "/",
      ...(options.entrypoint ? { Entrypoint: options.entrypoint } : {}),
      ...(options.user ? { User: options.user } : {}),
    },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: layers.map(() => ({ created: EPOCH.toISOString(), created_by: "memoh test image builder" })),
  });
  const manifest = jsonBlob(MEDIA_TYPES.manifest, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.blob.mediaType, digest: l.blob.digest, size: l.blob.size })),
  });
  return { ref, manifest, config, layers: layers.map((l) => l.blob), diffIds };
}

function refTag(ref: string): string {
  const at = ref.lastIndexOf(":");
  return at > ref.lastIndexOf("/") ? ref.slice(at + 1) : "latest";
}

/** The index.json descriptor for an image, carrying both name annotations. */
export function manifestDescriptor(image: OciImage): Descriptor {
  return {
    mediaType: image.manifest.mediaType,
    digest: image.manifest.digest,
    size: image.manifest.size,
    platform: { architecture: "amd64", os: "linux" },
    annotations: { [ANNOTATION_CONTAINERD_NAME]: image.ref, [ANNOTATION_REF_NAME]: refTag(image.ref) },
  };
}

/** Writes an OCI image layout as a tar file (atomically: temp file + rename). */
export async function writeOciLayout(images: OciImage[], tarPath: string): Promise<void> {
  const blobs = new Map<string, Blob>();
  for (const img of images) for (const b of [img.manifest, img.config, ...img.layers]) blobs.set(b.digest, b);
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: images.map(manifestDescriptor),
  };
  const tar = await packTar(async (pack) => {
    const file = (name: string, data: Buffer) =>
      addEntry(pack, { name, type: "file", mode: 0o644, mtime: EPOCH, size: data.length }, data);
    await file("oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
    await file("index.json", Buffer.from(JSON.stringify(index)));
    for (const dir of ["blobs/", "blobs/sha256/"]) {
      await addEntry(pack, { name: dir, type: "directory", mode: 0o755, mtime: EPOCH });
    }
    for (const b of blobs.values()) await file(`blobs/sha256/${b.digest.slice("sha256:".length)}`, b.data);
  });
  fs.mkdirSync(path.dirname(tarPath), { recursive: true });
  const tmp = `${tarPath}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, tar);
  fs.renameSync(tmp, tarPath);
}

/** Reads back an OCI layout tar written by writeOciLayout (images named by their annotation). */
export async function readOciLayout(tarPath: string): Promise<OciImage[]> {
  const files = new Map<string, Buffer>();
  const extract = tarStream.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (entry.header.type === "file") files.set(entry.header.name, Buffer.concat(chunks));
    }
  })();
  await pipeline(fs.createReadStream(tarPath), extract);
  await done;

  const blob = (d: Descriptor): Blob => {
    const data = files.get(`blobs/sha256/${d.digest.slice("sha256:".length)}`);
    if (data === undefined) throw new Error(`${tarPath}: blob ${d.digest} missing`);
    if (sha256(data) !== d.digest) throw new Error(`${tarPath}: blob ${d.digest} is corrupt`);
    return { mediaType: d.mediaType, digest: d.digest, size: data.length, data };
  };
  const indexData = files.get("index.json");
  if (indexData === undefined) throw new Error(`${tarPath}: no index.json`);
  const index = JSON.parse(indexData.toString()) as { manifests: Descriptor[] };
  return index.manifests.map((desc) => {
    const manifest = blob(desc);
    const m = JSON.parse(manifest.data.toString()) as { config: Descriptor; layers: Descriptor[] };
    const config = blob(m.config);
    const c = JSON.parse(config.data.toString()) as { rootfs: { diff_ids: string[] } };
    const ref = desc.annotations?.[ANNOTATION_CONTAINERD_NAME] ?? desc.annotations?.[ANNOTATION_REF_NAME] ?? desc.digest;
    return { ref, manifest, config, layers: m.layers.map(blob), diffIds: c.rootfs.diff_ids };
  });
}
