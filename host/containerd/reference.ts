// Image references, parsed and normalised the way Docker and containerd do
// (distribution's reference grammar): `debian` → `docker.io/library/debian:latest`.
import { ContainerdError } from "./errors.js";

export const DEFAULT_REGISTRY = "docker.io";
export const DEFAULT_TAG = "latest";

export interface ImageReference {
  /** Registry host, with port when given: "docker.io", "127.0.0.1:5000". */
  domain: string;
  /** Repository path inside the registry: "library/debian". */
  path: string;
  /** Tag; undefined only when the reference names a digest and no tag. */
  tag?: string;
  /** "sha256:<hex>" when the reference pins one. */
  digest?: string;
}

// One path component: lowercase alphanumerics separated by ".", "_", "__" or runs of "-".
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const MAX_NAME_LENGTH = 255;

function invalid(ref: string, why: string): ContainerdError {
  return new ContainerdError("invalid_argument", `invalid image reference ${JSON.stringify(ref)}: ${why}`);
}

function validDomain(domain: string): boolean {
  const m = /^(.+?)(?::(\d{1,5}))?$/.exec(domain);
  if (!m) return false;
  if (m[2] !== undefined && Number(m[2]) > 65535) return false;
  if (/^\[[0-9a-fA-F:.]+\]$/.test(m[1]!)) return true;
  return m[1]!.split(".").every((c) => DOMAIN_COMPONENT.test(c));
}

/** Parses and normalises an image reference; throws ContainerdError "invalid_argument" with the reason. */
export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (ref === "") throw invalid(input, "empty");
  if (ref.length > 1024) throw invalid(input.slice(0, 64) + "…", "too long");

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(ref, `digest ${JSON.stringify(digest)} is not sha256:<64 hex digits>`);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(ref, `tag ${JSON.stringify(tag)} must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }
  if (rest === "") throw invalid(ref, "no repository name");

  let domain = DEFAULT_REGISTRY;
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // As in Docker: the first component is a registry when it looks like a host.
    if (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase()) {
      domain = first;
      path = rest.slice(slash + 1);
      if (!validDomain(domain)) throw invalid(ref, `registry host ${JSON.stringify(domain)} is not a valid host[:port]`);
    }
  }
  if (domain === "index.docker.io") domain = DEFAULT_REGISTRY;
  if (domain === DEFAULT_REGISTRY && !path.includes("/")) path = `library/${path}`;

  for (const component of path.split("/")) {
    if (!PATH_COMPONENT.test(component)) {
      throw invalid(ref, `repository component ${JSON.stringify(component)} must be lowercase letters, digits and separators (. _ __ -)`);
    }
  }
  if (domain.length + 1 + path.length > MAX_NAME_LENGTH) throw invalid(ref, `name longer than ${MAX_NAME_LENGTH} characters`);
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** "domain/path[:tag][@digest]": the name containerd stores the image under. */
export function formatReference(ref: ImageReference): string {
  return `${ref.domain}/${ref.path}${ref.tag !== undefined ? `:${ref.tag}` : ""}${ref.digest !== undefined ? `@${ref.digest}` : ""}`;
}

/** Parses and formats back: the canonical full name of any accepted reference. */
export function normalizeReference(input: string): string {
  return formatReference(parseReference(input));
}
