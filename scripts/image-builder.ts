// Images built from files on this machine (no network), as OCI image layouts. The
// tests use both; `npm run up` uses the glibc one as the default workspace image.
//   memoh.test/busybox:latest  only /bin/busybox (busybox-static) + applet symlinks
//   memoh.test/glibc:latest    bash (also /bin/sh), coreutils, procps' ps, and the glibc
//                              libraries ldd lists for them, laid out like the host
//
// The building blocks (buildLayer, buildOciImage, writeOciLayout, readOciLayout) return every
// blob with its digest and bytes, so a registry-push helper can upload them as they are.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
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

export const TEST_IMAGE_REFS = {
  busybox: "memoh.test/busybox:latest",
  glibc: "memoh.test/glibc:latest",
} as const;
export type TestImageName = keyof typeof TEST_IMAGE_REFS;

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DEFAULT_IMAGE_CACHE_DIR = path.join(repoRoot, ".tmp", "images");

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

function sha256(data: Buffer | string): string {
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

// ---------------------------------------------------------------------------------------------
// Root filesystems of the two test images.

function baseEntries(): LayerEntry[] {
  const dir = (p: string, mode = 0o755): LayerEntry => ({ path: p, type: "dir", mode });
  const file = (p: string, text: string): LayerEntry => ({ path: p, type: "file", mode: 0o644, data: Buffer.from(text) });
  return [
    ...["etc", "proc", "sys", "dev", "run", "data", "usr", "usr/bin", "usr/sbin"].map((p) => dir(p)),
    dir("tmp", 0o1777),
    dir("root", 0o700),
    file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
  ];
}

const HOST_BUSYBOX = "/bin/busybox";

function busyboxEntries(): LayerEntry[] {
  const entries = baseEntries();
  entries.push({ path: "bin", type: "dir", mode: 0o755 }, { path: "sbin", type: "dir", mode: 0o755 });
  entries.push({ path: "bin/busybox", type: "file", mode: 0o755, data: fs.readFileSync(HOST_BUSYBOX) });
  const applets = execFileSync(HOST_BUSYBOX, ["--list-full"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const applet of applets) {
    if (applet === "bin/busybox") continue;
    const dir = path.dirname(applet);
    if (dir !== ".") entries.push({ path: dir, type: "dir", mode: 0o755 });
    entries.push({ path: applet, type: "symlink", target: "/bin/busybox" });
  }
  return entries;
}

// What an LLM-driven shell expects to find; bash, ls, cat and ps are required.
const GLIBC_REQUIRED = ["bash", "ls", "cat", "ps"];
const GLIBC_OPTIONAL = [
  "echo", "sleep", "env", "true", "false", "mkdir", "rmdir", "rm", "cp", "mv", "ln", "id", "head",
  "tail", "wc", "sort", "uname", "kill", "grep", "sed", "chmod", "touch", "pwd", "date", "dirname",
  "basename", "readlink", "stat", "tr", "test", "du", "df", "find", "xargs", "tee", "sha256sum", "stty",
];

function findHostBinary(name: string): string | undefined {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/** Adds `hostPath` to `entries` as it is on the host, symlinks along the way included. */
function addHostPath(entries: Map<string, LayerEntry>, hostPath: string, depth = 0): void {
  if (depth > 16) throw new Error(`too many symlinks resolving ${hostPath}`);
  const parts = hostPath.split("/").filter(Boolean);
  let current = "/";
  for (let i = 0; i < parts.length; i++) {
    current = path.join(current, parts[i]!);
    const st = fs.lstatSync(current);
    const key = current.slice(1);
    if (st.isSymbolicLink()) {
      const target = fs.readlinkSync(current);
      entries.set(key, { path: key, type: "symlink", target });
      const resolved = path.resolve(path.dirname(current), target);
      addHostPath(entries, path.join(resolved, ...parts.slice(i + 1)), depth + 1);
      return;
    }
    if (st.isDirectory()) {
      if (!entries.has(key)) entries.set(key, { path: key, type: "dir", mode: st.mode & 0o7777 });
    } else if (st.isFile() && i === parts.length - 1) {
      entries.set(key, { path: key, type: "file", mode: st.mode & 0o7777, data: fs.readFileSync(current) });
    } else {
      throw new Error(`${current}: unsupported file type for a test image`);
    }
  }
}

function lddPaths(elf: string): string[] {
  const out = execFileSync("ldd", [elf], { encoding: "utf8" });
  const paths: string[] = [];
  for (const line of out.split("\n")) {
    const m = line.match(/=>\s+(\/\S+)/) ?? line.match(/^\s*(\/\S+)\s+\(/);
    if (m) paths.push(m[1]!);
    else if (line.includes("not found")) throw new Error(`ldd ${elf}: ${line.trim()}`);
  }
  return paths;
}

function glibcEntries(): LayerEntry[] {
  const entries = new Map<string, LayerEntry>();
  for (const e of baseEntries()) entries.set(e.path, e);
  // Debian's merged /usr: /bin, /sbin, /lib, /lib64 are symlinks into /usr; mirror them.
  for (const top of ["/bin", "/sbin", "/lib", "/lib64"]) if (fs.existsSync(top)) addHostPath(entries, top);
  const binaries: string[] = [];
  for (const name of [...GLIBC_REQUIRED, ...GLIBC_OPTIONAL]) {
    const p = findHostBinary(name);
    if (p === undefined && GLIBC_REQUIRED.includes(name)) throw new Error(`${name} not found on this machine`);
    if (p !== undefined) binaries.push(p);
  }
  const libs = new Set<string>();
  for (const bin of binaries) {
    addHostPath(entries, bin);
    for (const lib of lddPaths(bin)) libs.add(lib);
  }
  for (const lib of libs) addHostPath(entries, lib);
  // The host's /bin/sh is dash; this image's shell is bash.
  const bash = findHostBinary("bash")!;
  const shDir = path.dirname(fs.realpathSync(bash)).slice(1);
  entries.set(`${shDir}/sh`, { path: `${shDir}/sh`, type: "symlink", target: "bash" });
  return [...entries.values()];
}

const IMAGE_SOURCES: Record<TestImageName, { roots: () => string[]; entries: () => LayerEntry[] }> = {
  busybox: { roots: () => [HOST_BUSYBOX], entries: busyboxEntries },
  glibc: {
    roots: () => [...GLIBC_REQUIRED, ...GLIBC_OPTIONAL].map(findHostBinary).filter((p): p is string => p !== undefined),
    entries: glibcEntries,
  },
};

export interface TestImage {
  name: TestImageName;
  ref: string;
  /** OCI layout tar holding just this image. */
  tarPath: string;
  image: OciImage;
}

/**
 * The cache key covers this builder's source and the binaries the image starts from; when the
 * host's libraries change underneath, the cached image stays self-consistent, so it is kept.
 */
function cacheKey(name: TestImageName): string {
  const self = fs.readFileSync(fileURLToPath(import.meta.url));
  const roots = IMAGE_SOURCES[name].roots().map((p) => {
    const st = fs.statSync(p);
    return `${p}:${st.size}:${st.mtimeMs}`;
  });
  return sha256(Buffer.concat([self, Buffer.from(roots.join("\n"))]));
}

async function buildTestImage(name: TestImageName, cacheDir: string): Promise<TestImage> {
  const ref = TEST_IMAGE_REFS[name];
  const tarPath = path.join(cacheDir, `${name}.oci.tar`);
  const keyPath = path.join(cacheDir, `${name}.key`);
  const key = cacheKey(name);
  if (fs.existsSync(tarPath) && fs.existsSync(keyPath) && fs.readFileSync(keyPath, "utf8") === key) {
    const [image] = await readOciLayout(tarPath);
    if (image !== undefined && image.ref === ref) return { name, ref, tarPath, image };
  }
  const image = buildOciImage(ref, [await buildLayer(IMAGE_SOURCES[name].entries())]);
  await writeOciLayout([image], tarPath);
  fs.writeFileSync(keyPath, key);
  return { name, ref, tarPath, image };
}

/** Builds (or takes from the cache) both test images as OCI layout tars. */
export async function buildTestImages(cacheDir = DEFAULT_IMAGE_CACHE_DIR): Promise<Record<TestImageName, TestImage>> {
  const [busybox, glibc] = await Promise.all([buildTestImage("busybox", cacheDir), buildTestImage("glibc", cacheDir)]);
  return { busybox, glibc };
}

/** Builds one image of the given kind from host files under another name (e.g. the default workspace image). */
export async function buildHostImage(kind: TestImageName, ref: string, tarPath: string): Promise<OciImage> {
  const image = buildOciImage(ref, [await buildLayer(IMAGE_SOURCES[kind].entries())]);
  await writeOciLayout([image], tarPath);
  return image;
}

/**
 * Another image on top of `base`: its layers plus one more made of `entries`, with its
 * own config (user, environment, working dir, entrypoint), as users' images are.
 */
export async function deriveImage(base: OciImage, ref: string, entries: LayerEntry[], options: ImageConfigOptions): Promise<OciImage> {
  const extra = await buildLayer(entries);
  const layers = base.layers.map((blob, i) => ({ blob, diffId: base.diffIds[i]! }));
  return buildOciImage(ref, [...layers, extra], options);
}
