// OCI image documents: media types, descriptors, manifests, indexes, image
// configs, chain IDs, and which manifest of an index this host runs. Pulling,
// importing and creating containers all choose through selectPlatform, so an
// image pulled for one manifest is never started from another.
// Documents come from registries and content stores: shapes, media types,
// sizes and digests are checked before use.
import { createHash } from "node:crypto";
import type { ImageConfig } from "./spec.js";

export const MEDIA_TYPE = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  dockerForeignLayerGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export const INDEX_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE.ociIndex, MEDIA_TYPE.dockerList];
export const MANIFEST_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE.ociManifest, MEDIA_TYPE.dockerManifest];
export const CONFIG_MEDIA_TYPES: readonly string[] = [MEDIA_TYPE.ociConfig, MEDIA_TYPE.dockerConfig];
export const LAYER_MEDIA_TYPES: readonly string[] = [
  MEDIA_TYPE.ociLayer,
  MEDIA_TYPE.ociLayerGzip,
  MEDIA_TYPE.ociLayerZstd,
  MEDIA_TYPE.dockerLayer,
  MEDIA_TYPE.dockerLayerGzip,
  MEDIA_TYPE.dockerForeignLayerGzip,
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
];

/** Manifests and indexes are small; a source sending more is broken or hostile. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
export const DIGEST = /^sha256:[a-f0-9]{64}$/;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageManifest {
  kind: "manifest";
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: "index";
  mediaType: string;
  manifests: Descriptor[];
}

export interface ParsedImageConfig {
  /** sha256 of each uncompressed layer, bottom first. */
  diffIds: string[];
  platform: Platform;
  /** What a container's spec takes from the image: env, command, working dir, user. */
  config: ImageConfig;
}

export function sha256Digest(data: Buffer | Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** chainID(0) = diffID(0); chainID(n) = sha256(chainID(n-1) + " " + diffID(n)): the snapshot names of an image's layers. */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : sha256Digest(Buffer.from(`${prev} ${d}`)));
  }
  return out;
}

// ---------------------------------------------------------------- parsing

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringRecord(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) throw new Error(`${where} is not an object`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string") throw new Error(`${where}.${k} is not a string`);
    out[k] = val;
  }
  return out;
}

function parseJsonObject(data: Buffer, what: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(data.toString("utf8"));
  } catch (err) {
    throw new Error(`${what}is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isRecord(json)) throw new Error(`${what}is not a JSON object`);
  return json;
}

/** Checks one descriptor from a manifest, an index or an OCI layout's index.json. */
export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isRecord(v)) throw new Error(`${where} is not an object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== "string" || mediaType === "") throw new Error(`${where}.mediaType is missing`);
  if (typeof digest !== "string" || !DIGEST.test(digest)) throw new Error(`${where}.digest ${JSON.stringify(digest)} is not sha256:<64 hex>`);
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw new Error(`${where}.size ${JSON.stringify(size)} is not a size`);
  const desc: Descriptor = { mediaType, digest, size };
  if (v.platform !== undefined) {
    const p = v.platform;
    if (!isRecord(p) || typeof p.os !== "string" || typeof p.architecture !== "string") throw new Error(`${where}.platform is malformed`);
    desc.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === "string" && p.variant !== "" ? { variant: p.variant } : {}) };
  }
  const annotations = stringRecord(v.annotations, `${where}.annotations`);
  if (annotations) desc.annotations = annotations;
  if (Array.isArray(v.urls) && v.urls.every((u) => typeof u === "string")) desc.urls = v.urls as string[];
  return desc;
}

/** Parses a manifest or index; `mediaType` is the Content-Type or the descriptor's type. */
export function parseManifest(data: Buffer, mediaType: string | undefined): ImageManifest | ImageIndex {
  const json = parseJsonObject(data, "");
  if (json.schemaVersion !== 2) throw new Error(`schemaVersion ${JSON.stringify(json.schemaVersion)} is not 2 (Docker schema 1 is not supported)`);
  const declared = typeof json.mediaType === "string" ? json.mediaType : undefined;
  const type = declared ?? mediaType ?? (Array.isArray(json.manifests) ? MEDIA_TYPE.ociIndex : MEDIA_TYPE.ociManifest);
  if (INDEX_MEDIA_TYPES.includes(type) || (declared === undefined && Array.isArray(json.manifests))) {
    if (!Array.isArray(json.manifests)) throw new Error("index has no manifests array");
    return { kind: "index", mediaType: type, manifests: json.manifests.map((m, i) => parseDescriptor(m, `manifests[${i}]`)) };
  }
  if (!MANIFEST_MEDIA_TYPES.includes(type)) throw new Error(`unsupported manifest media type ${JSON.stringify(type)}`);
  if (!Array.isArray(json.layers)) throw new Error("manifest has no layers array");
  const config = parseDescriptor(json.config, "config");
  if (!CONFIG_MEDIA_TYPES.includes(config.mediaType)) throw new Error(`unsupported config media type ${JSON.stringify(config.mediaType)}`);
  const layers = json.layers.map((l, i) => parseDescriptor(l, `layers[${i}]`));
  for (const [i, l] of layers.entries()) {
    if (!LAYER_MEDIA_TYPES.includes(l.mediaType)) throw new Error(`layers[${i}] has unsupported media type ${JSON.stringify(l.mediaType)}`);
  }
  return { kind: "manifest", mediaType: type, config, layers };
}

function optionalStrings(v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) throw new Error(`image config ${where} is not an array of strings`);
  return v as string[];
}

function optionalString(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new Error(`image config ${where} is not a string`);
  return v;
}

/** An image config: its layers' diff_ids, its platform, and the part a container spec uses. */
export function parseImageConfig(data: Buffer): ParsedImageConfig {
  const json = parseJsonObject(data, "image config ");
  if (!isRecord(json.rootfs) || !Array.isArray(json.rootfs.diff_ids)) throw new Error("image config has no rootfs.diff_ids");
  const diffIds = json.rootfs.diff_ids.map((d, i) => {
    if (typeof d !== "string" || !DIGEST.test(d)) throw new Error(`image config rootfs.diff_ids[${i}] ${JSON.stringify(d)} is not sha256:<64 hex>`);
    return d;
  });
  const runtime = json.config ?? {};
  if (!isRecord(runtime)) throw new Error("image config config is not an object");
  const config: ImageConfig = {};
  const env = optionalStrings(runtime.Env, "config.Env");
  if (env) config.Env = env;
  const cmd = optionalStrings(runtime.Cmd, "config.Cmd");
  if (cmd) config.Cmd = cmd;
  const entrypoint = optionalStrings(runtime.Entrypoint, "config.Entrypoint");
  if (entrypoint) config.Entrypoint = entrypoint;
  const workingDir = optionalString(runtime.WorkingDir, "config.WorkingDir");
  if (workingDir !== undefined) config.WorkingDir = workingDir;
  const user = optionalString(runtime.User, "config.User");
  if (user !== undefined) config.User = user;
  return {
    diffIds,
    platform: {
      os: typeof json.os === "string" ? json.os : "",
      architecture: typeof json.architecture === "string" ? json.architecture : "",
      ...(typeof json.variant === "string" && json.variant !== "" ? { variant: json.variant } : {}),
    },
    config,
  };
}

// ---------------------------------------------------------------- platforms

/** Node's process.arch → GOARCH, the names image indexes use. */
const NODE_ARCH: Record<string, string> = { x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64", loong64: "loong64", mipsel: "mipsle" };
/** Names other tools write for the same architecture. */
const ARCH_ALIASES: Record<string, Platform["architecture"]> = { x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64", i386: "386", i686: "386", armhf: "arm", armel: "arm" };
/**
 * Architectures whose variants are levels: a CPU of level vN runs images built
 * for any lower level. No variant means the base level.
 */
const BASE_VARIANT: Record<string, string> = { amd64: "v1", arm64: "v8", arm: "v7" };

/** The platform of the containers this host runs: linux, GOARCH, and for 32-bit arm the variant Node was built for. */
export function hostPlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  const armVersion = (process.config.variables as unknown as Record<string, unknown>).arm_version;
  const variant = architecture === "arm" && typeof armVersion === "string" && /^\d+$/.test(armVersion) ? `v${armVersion}` : undefined;
  return { os: "linux", architecture, ...(variant ? { variant } : {}) };
}

/** Lower case, GOARCH names, and the base variant made explicit where variants are levels. */
export function normalizePlatform(p: Platform): Platform {
  const arch = p.architecture.toLowerCase();
  const architecture = ARCH_ALIASES[arch] ?? arch;
  let variant = p.variant?.toLowerCase();
  if (variant === undefined && arch === "armhf") variant = "v7";
  if (variant === undefined && arch === "armel") variant = "v6";
  if (variant !== undefined && /^\d+(\.\d+)?$/.test(variant)) variant = `v${variant}`;
  variant ??= BASE_VARIANT[architecture];
  return { os: p.os.toLowerCase(), architecture, ...(variant !== undefined ? { variant } : {}) };
}

function variantLevel(variant: string | undefined): number | undefined {
  const m = variant === undefined ? null : /^v(\d+)(?:\.(\d+))?$/.exec(variant);
  return m ? Number(m[1]) * 1000 + Number(m[2] ?? 0) : undefined;
}

/**
 * How well an index entry of platform `candidate` suits `wanted`: undefined
 * when it cannot run there; otherwise higher is better (the exact variant
 * first, then lower levels from the nearest down).
 */
function platformRank(candidate: Platform, wanted: Platform): number | undefined {
  const c = normalizePlatform(candidate);
  const w = normalizePlatform(wanted);
  if (c.os !== w.os || c.architecture !== w.architecture) return undefined;
  if (c.variant === w.variant) return Number.MAX_SAFE_INTEGER;
  if (BASE_VARIANT[w.architecture] !== undefined) {
    const have = variantLevel(c.variant);
    const want = variantLevel(w.variant);
    return have !== undefined && want !== undefined && have < want ? have : undefined;
  }
  // Architectures without levels: an entry without a variant runs on every variant.
  return c.variant === undefined ? 0 : undefined;
}

/**
 * The manifest of an index that `platform` runs, as containerd chooses: the
 * exact platform first, then compatible lower variants (arm/v6 on an arm/v7
 * host; never amd64/v3 on a plain amd64 host), then an entry without a
 * platform; the index's order breaks ties. Undefined when none fits.
 */
export function selectPlatform(index: ImageIndex, platform: Platform): Descriptor | undefined {
  let best: { desc: Descriptor; rank: number } | undefined;
  for (const desc of index.manifests) {
    if (!MANIFEST_MEDIA_TYPES.includes(desc.mediaType)) continue;
    const rank = desc.platform ? platformRank(desc.platform, platform) : -1;
    if (rank !== undefined && (best === undefined || rank > best.rank)) best = { desc, rank };
  }
  return best?.desc;
}

/** "linux/arm64/v8", "linux/amd64". */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}
