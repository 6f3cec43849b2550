// What a container needs from a stored image: the top chainID of its layers (the
// parent of the container's snapshot) and its config (env, command, user), for
// the manifest this host runs, chosen by the same resolver a pull uses.
import type { ContainerdCallOptions, ContainerdConnection } from "./connection.js";
import { ContainerdError } from "./errors.js";
import { getImage, resolveImage } from "./images.js";
import { hostPlatform, type Platform } from "./oci.js";
import type { ImageConfig } from "./spec.js";

export interface ImageRootfs {
  name: string;
  manifestDigest: string;
  configDigest: string;
  diffIds: string[];
  /** Top chainID: the committed snapshot holding the whole image. */
  chainId: string;
  config: ImageConfig;
}

/** Resolves a stored image (by name) to its chainID and config, for `platform` (default: the host's). */
export async function imageRootfs(conn: ContainerdConnection, name: string, platform: Platform = hostPlatform(), call?: ContainerdCallOptions): Promise<ImageRootfs> {
  const image = await getImage(conn, name, call);
  if (!image) throw new ContainerdError("not_found", `image ${name} is not in containerd: pull or import it first`);
  const resolved = await resolveImage(conn, image, platform, call);
  return { name, manifestDigest: resolved.manifest.digest, configDigest: resolved.config.digest, diffIds: resolved.diffIds, chainId: resolved.chainId, config: resolved.imageConfig };
}
