// Importing an OCI image layout tarball (what `ctr images export` or a build
// writes) for hosts without a registry: every blob streams into the content
// store (digest checked), then each image in index.json is labelled for GC,
// unpacked and recorded, all under one lease.
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tarStream from "tar-stream";
import { Leases } from "../../proto/gen/containerd/services/leases/v1/leases_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { deleteContent, updateContentLabels, writeBlob } from "./content.js";
import { ContainerdError } from "./errors.js";
import { putImage, resolveImage, type Image } from "./images.js";
import { LABEL_GC_EXPIRE, LABEL_UNCOMPRESSED } from "./pull.js";
import { normalizeReference } from "./reference.js";
import { hostPlatform, parseDescriptor, type Platform } from "./oci.js";
import { removeSnapshot, unpackLayers } from "./unpack.js";

const ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name";
const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";
const BLOB_PATH = /^blobs\/sha256\/([a-f0-9]{64})$/;

export interface ImportOptions {
  snapshotter?: string;
  platform?: Platform;
  /** Name for images whose index entry carries no full name annotation. */
  name?: string;
}

export interface ImportedImage {
  image: Image;
  chainId: string;
}

/** Imports every image of an OCI layout tar (a path or a stream). */
export async function importOciLayout(conn: ContainerdConnection, source: string | Readable, options: ImportOptions = {}): Promise<ImportedImage[]> {
  const snapshotter = options.snapshotter ?? "overlayfs";
  const platform = options.platform ?? hostPlatform();
  const leaseId = `memoh-import-${randomBytes(8).toString("hex")}`;
  await conn.unary(Leases.method.create, { id: leaseId, labels: { [LABEL_GC_EXPIRE]: new Date(Date.now() + 3600_000).toISOString() } });
  const call: ContainerdCallOptions = { lease: leaseId };
  const createdContent: string[] = [];
  const createdSnapshots: string[] = [];
  try {
    const { index, layoutSeen } = await writeBlobs(conn, source, call, createdContent);
    if (!layoutSeen) throw new ContainerdError("invalid_argument", "not an OCI image layout: no oci-layout file");
    if (!index) throw new ContainerdError("invalid_argument", "not an OCI image layout: no index.json");
    const parsed = parseIndex(index);
    const out: ImportedImage[] = [];
    for (const desc of parsed) {
      // containerd's annotation is a full name; the OCI one is often just a tag ("latest").
      const full = desc.annotations?.[ANNOTATION_CONTAINERD_NAME];
      const refName = desc.annotations?.[ANNOTATION_REF_NAME];
      const candidate = full ?? (refName?.includes("/") ? refName : undefined) ?? options.name;
      if (candidate === undefined) {
        throw new ContainerdError("invalid_argument", `image ${desc.digest} in the layout has no full name (${refName ? `ref.name ${JSON.stringify(refName)}` : "no name annotation"}): pass options.name`);
      }
      const name = normalizeReference(candidate);
      const target = { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
      const resolved = await resolveImage(conn, { name, target, labels: {} }, platform, call);
      const chainId = await unpackLayers(conn, resolved.layers, { snapshotter, lease: leaseId, onCommitted: (id) => createdSnapshots.push(id) });
      for (const l of resolved.layers) await updateContentLabels(conn, l.digest, { [LABEL_UNCOMPRESSED]: l.diffId }, call);
      await updateContentLabels(conn, resolved.config.digest, { [`containerd.io/gc.ref.snapshot.${snapshotter}`]: chainId }, call);
      const manifestLabels: Record<string, string> = { "containerd.io/gc.ref.content.config": resolved.config.digest };
      resolved.layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
      await updateContentLabels(conn, resolved.manifest.digest, manifestLabels, call);
      if (resolved.index) {
        await updateContentLabels(conn, target.digest, { [`containerd.io/gc.ref.content.m.${resolved.index.position}`]: resolved.manifest.digest }, call);
      }
      const { image } = await putImage(conn, { name, target, labels: {} }, call);
      out.push({ image, chainId });
    }
    return out;
  } catch (err) {
    for (const key of createdSnapshots.reverse()) await removeSnapshot(conn, snapshotter, key).catch(() => {});
    for (const digest of createdContent) await deleteContent(conn, digest).catch(() => {});
    throw err;
  } finally {
    await conn.unary(Leases.method.delete, { id: leaseId, sync: false }).catch(() => {});
  }
}

function parseIndex(data: Buffer) {
  let json: unknown;
  try {
    json = JSON.parse(data.toString("utf8"));
  } catch {
    throw new ContainerdError("invalid_argument", "index.json is not JSON");
  }
  if (typeof json !== "object" || json === null || !Array.isArray((json as { manifests?: unknown }).manifests)) {
    throw new ContainerdError("invalid_argument", "index.json has no manifests array");
  }
  try {
    return (json as { manifests: unknown[] }).manifests.map((m, i) => parseDescriptor(m, `index.json manifests[${i}]`));
  } catch (err) {
    throw new ContainerdError("invalid_argument", err instanceof Error ? err.message : String(err));
  }
}

async function writeBlobs(
  conn: ContainerdConnection,
  source: string | Readable,
  call: ContainerdCallOptions,
  created: string[],
): Promise<{ index: Buffer | undefined; layoutSeen: boolean }> {
  const extract = tarStream.extract();
  let index: Buffer | undefined;
  let layoutSeen = false;
  const consume = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, "").replace(/^\/+/, "");
      const blob = BLOB_PATH.exec(name);
      if (entry.header.type === "file" && blob) {
        const digest = `sha256:${blob[1]}`;
        let consumed = false;
        const res = await writeBlob(
          conn,
          async () => {
            consumed = true;
            return { from: 0, chunks: entry as AsyncIterable<Buffer> };
          },
          { ref: `memoh-import-${digest}`, digest, size: entry.header.size ?? 0, name: `blob ${name} of the layout`, call },
        );
        if (!res.existed) created.push(digest);
        if (!consumed) for await (const _ of entry as AsyncIterable<Buffer>) void _;
      } else if (entry.header.type === "file" && (name === "index.json" || name === "oci-layout")) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of entry as AsyncIterable<Buffer>) {
          size += c.length;
          if (size > 4 * 1024 * 1024) throw new ContainerdError("invalid_argument", `${name} in the layout is too large`);
          chunks.push(c);
        }
        if (name === "index.json") index = Buffer.concat(chunks);
        else layoutSeen = true;
      } else {
        for await (const _ of entry as AsyncIterable<Buffer>) void _;
      }
    }
  })();
  const input = typeof source === "string" ? fs.createReadStream(source) : source;
  // A failed blob write stops the tar reader too, so nothing keeps reading the file.
  const consumed = consume.catch((err: unknown) => {
    extract.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });
  const [piped, done] = await Promise.allSettled([pipeline(input, extract), consumed]);
  if (done.status === "rejected") throw done.reason;
  if (piped.status === "rejected") {
    throw new ContainerdError("invalid_argument", `cannot read the OCI layout tar: ${piped.reason instanceof Error ? piped.reason.message : String(piped.reason)}`, { cause: piped.reason });
  }
  return { index, layoutSeen };
}
