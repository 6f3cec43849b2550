// What a container needs from a stored image: the top chainID of its layers (the
// parent of the container's snapshot) and its config (env, command, user).
// Reads index → manifest → config through Content.Read; picks the host platform.
import { createHash } from "node:crypto";
import { Images } from "../../proto/gen/containerd/services/images/v1/images_pb.js";
import { Content } from "../../proto/gen/containerd/services/content/v1/content_pb.js";
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError } from "./errors.js";
import type { ImageConfig } from "./spec.js";

const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const MANIFEST_TYPES = new Set(["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]);
/** Reads of JSON documents are capped: they are small, and the daemon is not the only writer of content. */
const MAX_JSON_BYTES = 4 * 1024 * 1024;

export interface PlatformSpec {
  os: string;
  architecture: string;
  variant?: string;
}

export function hostPlatform(): PlatformSpec {
  const arch = ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x" } as Record<string, string>)[process.arch] ?? process.arch;
  return { os: "linux", architecture: arch };
}

export interface ImageRootfs {
  name: string;
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
  /** Top chainID: the committed snapshot holding the whole image. */
  chainId: string;
  config: ImageConfig;
}

import { chainIds } from "./unpack.js";

export { chainIds };

/** A whole blob from the content store, checked against its digest. */
export async function readBlob(conn: ContainerdConnection, digest: string, maxBytes = MAX_JSON_BYTES, call?: ContainerdCallOptions): Promise<Buffer> {
  const stream = conn.serverStream(Content.method.read, { digest, offset: 0n, size: 0n }, call);
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of stream) {
      n += chunk.data.length;
      if (n > maxBytes) {
        stream.cancel();
        throw new ContainerdError("resource_exhausted", `blob ${digest} is larger than ${maxBytes} bytes`);
      }
      chunks.push(Buffer.from(chunk.data));
    }
  } catch (err) {
    throw conn.wrap(err, Content.method.read);
  }
  const data = Buffer.concat(chunks);
  const [alg, hex] = digest.split(":");
  if (alg === "sha256" && createHash("sha256").update(data).digest("hex") !== hex) {
    throw new ContainerdError("digest_mismatch", `content ${digest} does not match its digest`);
  }
  return data;
}

async function readJson(conn: ContainerdConnection, digest: string, call?: ContainerdCallOptions): Promise<Record<string, unknown>> {
  const parsed: unknown = JSON.parse((await readBlob(conn, digest, MAX_JSON_BYTES, call)).toString("utf8"));
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new ContainerdError("invalid_argument", `content ${digest} is not a JSON object`);
  return parsed as Record<string, unknown>;
}

interface DescriptorJson {
  mediaType: string;
  digest: string;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function descriptors(v: unknown, where: string): DescriptorJson[] {
  if (!Array.isArray(v)) throw new ContainerdError("invalid_argument", `${where}: expected an array of descriptors`);
  return v.map((d: unknown) => {
    const o = d as Partial<DescriptorJson> | null;
    if (!o || typeof o.digest !== "string" || typeof o.mediaType !== "string") throw new ContainerdError("invalid_argument", `${where}: malformed descriptor`);
    return o as DescriptorJson;
  });
}

/** Resolves a stored image (by name) to its chainID and config, for `platform` (default: the host's). */
export async function imageRootfs(conn: ContainerdConnection, name: string, platform = hostPlatform(), call?: ContainerdCallOptions): Promise<ImageRootfs> {
  const res = await conn.unary(Images.method.get, { name }, call);
  let desc: DescriptorJson | undefined = res.image?.target ? { mediaType: res.image.target.mediaType, digest: res.image.target.digest } : undefined;
  if (!desc) throw new ContainerdError("not_found", `image ${name} has no target`);
  for (let depth = 0; INDEX_TYPES.has(desc.mediaType); depth++) {
    if (depth > 4) throw new ContainerdError("invalid_argument", `image ${name}: indexes nested too deep`);
    const index = await readJson(conn, desc.digest, call);
    const manifests = descriptors(index.manifests, `index ${desc.digest}`);
    const match: DescriptorJson | undefined =
      manifests.find((m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture && (!platform.variant || m.platform?.variant === platform.variant)) ??
      (manifests.length === 1 && !manifests[0]!.platform ? manifests[0] : undefined);
    if (!match) {
      const have = manifests.map((m) => `${m.platform?.os ?? "?"}/${m.platform?.architecture ?? "?"}`).join(", ");
      throw new ContainerdError("not_found", `image ${name} has no manifest for ${platform.os}/${platform.architecture} (has: ${have || "none"})`);
    }
    desc = match;
  }
  if (!MANIFEST_TYPES.has(desc.mediaType)) throw new ContainerdError("invalid_argument", `image ${name}: unsupported media type ${desc.mediaType}`);
  const manifestDigest = desc.digest;
  const manifest = await readJson(conn, manifestDigest, call);
  const configDesc = manifest.config as Partial<DescriptorJson> | undefined;
  if (!configDesc || typeof configDesc.digest !== "string") throw new ContainerdError("invalid_argument", `manifest ${manifestDigest} has no config`);
  const config = await readJson(conn, configDesc.digest, call);
  const rootfs = config.rootfs as { diff_ids?: unknown } | undefined;
  const diffIds = rootfs?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length === 0 || !diffIds.every((d): d is string => typeof d === "string")) {
    throw new ContainerdError("invalid_argument", `image config ${configDesc.digest} has no rootfs.diff_ids`);
  }
  const ids = chainIds(diffIds);
  const cfg = (config.config ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) => (Array.isArray(v) && v.every((s) => typeof s === "string") ? (v as string[]) : undefined);
  const imageConfig: ImageConfig = {};
  const env = strings(cfg.Env);
  if (env) imageConfig.Env = env;
  const cmd = strings(cfg.Cmd);
  if (cmd) imageConfig.Cmd = cmd;
  const entrypoint = strings(cfg.Entrypoint);
  if (entrypoint) imageConfig.Entrypoint = entrypoint;
  if (typeof cfg.WorkingDir === "string") imageConfig.WorkingDir = cfg.WorkingDir;
  if (typeof cfg.User === "string") imageConfig.User = cfg.User;
  return { name, manifestDigest, configDigest: configDesc.digest, diffIds, chainId: ids[ids.length - 1]!, config: imageConfig };
}

/** The image's top chainID (the parent for a container's snapshot). */
export async function imageChainId(conn: ContainerdConnection, name: string, platform?: PlatformSpec): Promise<string> {
  return (await imageRootfs(conn, name, platform)).chainId;
}
