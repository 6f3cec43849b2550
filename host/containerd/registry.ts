// An OCI distribution (registry v2) client over undici: resolve a tag to a
// manifest, pick the platform from an index, fetch blobs as streams. Anonymous,
// Basic and Bearer-token auth. Everything a registry returns is untrusted:
// JSON shapes, media types, sizes and digests are checked before use.
// TLS trusts Node's bundled roots, the host's CA bundle and the operator's extra
// CAs. Loopback and configured insecure hosts are treated like Docker's insecure
// registries: HTTPS first, plain HTTP when the server does not speak TLS (or its
// certificate is not trusted), remembered per host for the client's life.
import { X509Certificate, createHash } from "node:crypto";
import fs from "node:fs";
import tls from "node:tls";
import { Agent, buildConnector, interceptors, type Dispatcher } from "undici";
import { ContainerdError } from "./errors.js";
import { formatReference, type ImageReference } from "./reference.js";

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

const ACCEPT = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].join(", ");
/** Manifests and configs are small; a registry sending more is broken or hostile. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

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

export interface Credentials {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** Credentials by registry host ("127.0.0.1:5000", "docker.io"). */
  credentials?: Record<string, Credentials>;
  /**
   * Hosts that, like loopback (127.0.0.0/8, localhost, ::1), may be spoken to over
   * plain HTTP: HTTPS is tried first, HTTP when the server does not speak TLS or
   * its certificate is not trusted.
   */
  insecureHosts?: string[];
  /** Extra trusted CAs (PEM texts, each may hold several certificates), e.g. a private registry's. */
  ca?: string[];
  /** TCP connect timeout (default 10 s); a TLS handshake also ends within the headers timeout. */
  connectTimeoutMs?: number;
  /** Time to the response headers (default 10 s). */
  headersTimeoutMs?: number;
  /** Longest pause inside a response body (default 60 s). */
  bodyTimeoutMs?: number;
}

// ---------------------------------------------------------------- validation

function registryError(what: string, why: string, cause?: unknown): ContainerdError {
  return new ContainerdError("registry", `${what}: ${why}`, cause === undefined ? undefined : { cause });
}

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

/** Checks one descriptor from registry JSON. */
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
    desc.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === "string" ? { variant: p.variant } : {}) };
  }
  const annotations = stringRecord(v.annotations, `${where}.annotations`);
  if (annotations) desc.annotations = annotations;
  if (Array.isArray(v.urls) && v.urls.every((u) => typeof u === "string")) desc.urls = v.urls as string[];
  return desc;
}

/** Parses a manifest or index; `mediaType` is the Content-Type or the descriptor's type. */
export function parseManifest(data: Buffer, mediaType: string | undefined): ImageManifest | ImageIndex {
  let json: unknown;
  try {
    json = JSON.parse(data.toString("utf8"));
  } catch (err) {
    throw new Error(`not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isRecord(json)) throw new Error("not a JSON object");
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

/** The diff_ids of an image config (sha256 of each uncompressed layer). */
export function parseImageConfig(data: Buffer): { diffIds: string[]; platform: Platform } {
  let json: unknown;
  try {
    json = JSON.parse(data.toString("utf8"));
  } catch (err) {
    throw new Error(`image config is not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isRecord(json) || !isRecord(json.rootfs) || !Array.isArray(json.rootfs.diff_ids)) throw new Error("image config has no rootfs.diff_ids");
  const diffIds = json.rootfs.diff_ids.map((d, i) => {
    if (typeof d !== "string" || !DIGEST.test(d)) throw new Error(`image config rootfs.diff_ids[${i}] ${JSON.stringify(d)} is not sha256:<64 hex>`);
    return d;
  });
  return {
    diffIds,
    platform: {
      os: typeof json.os === "string" ? json.os : "",
      architecture: typeof json.architecture === "string" ? json.architecture : "",
      ...(typeof json.variant === "string" ? { variant: json.variant } : {}),
    },
  };
}

export function hostPlatform(): Platform {
  const arch = process.arch === "x64" ? "amd64" : process.arch === "ia32" ? "386" : process.arch;
  return { os: process.platform, architecture: arch };
}

/** The best manifest of an index for `platform` (exact variant first), or undefined. */
export function selectPlatform(index: ImageIndex, platform: Platform): Descriptor | undefined {
  const candidates = index.manifests.filter(
    (m) => MANIFEST_MEDIA_TYPES.includes(m.mediaType) && m.platform?.os === platform.os && m.platform.architecture === platform.architecture,
  );
  if (platform.variant !== undefined) {
    const exact = candidates.find((m) => m.platform?.variant === platform.variant);
    if (exact) return exact;
  }
  return candidates.find((m) => m.platform?.variant === undefined) ?? candidates[0];
}

// ---------------------------------------------------------------- credentials

/** Reads `auths` from a Docker-style config.json: base64 `auth` or `username`/`password`. */
export function loadDockerConfig(file: string): Record<string, Credentials> {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new ContainerdError("invalid_argument", `registry auth file ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const out: Record<string, Credentials> = {};
  if (!isRecord(json) || json.auths === undefined) return out;
  if (!isRecord(json.auths)) throw new ContainerdError("invalid_argument", `registry auth file ${file}: "auths" is not an object`);
  for (const [key, entry] of Object.entries(json.auths)) {
    if (!isRecord(entry)) continue;
    let creds: Credentials | undefined;
    if (typeof entry.auth === "string" && entry.auth !== "") {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) throw new ContainerdError("invalid_argument", `registry auth file ${file}: auths.${key}.auth is not base64 "user:password"`);
      creds = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    } else if (typeof entry.username === "string" && typeof entry.password === "string") {
      creds = { username: entry.username, password: entry.password };
    }
    if (creds) out[normalizeAuthKey(key)] = creds;
  }
  return out;
}

/** "https://index.docker.io/v1/" → "docker.io"; "http://127.0.0.1:5000" → "127.0.0.1:5000". */
function normalizeAuthKey(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//, "").replace(/\/.*$/, "");
  return host === "index.docker.io" || host === "registry-1.docker.io" ? "docker.io" : host;
}

// ---------------------------------------------------------------- TLS trust

/** The host's CA bundle, as Debian's update-ca-certificates writes it. */
export const SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

let systemCertificates: string[] | undefined;

/** The certificates of the system bundle, read once per process; none when it is absent. */
export function systemCaCertificates(): string[] {
  if (systemCertificates === undefined) {
    try {
      systemCertificates = fs.readFileSync(SYSTEM_CA_BUNDLE, "utf8").match(PEM_CERTIFICATE) ?? [];
    } catch {
      systemCertificates = [];
    }
  }
  return systemCertificates;
}

/** The certificates of a PEM text, each checked to parse (Node silently ignores junk in `ca`). */
export function parsePemCertificates(pem: string, where: string): string[] {
  const certs = pem.match(PEM_CERTIFICATE) ?? [];
  if (!certs.length) throw new ContainerdError("invalid_argument", `${where}: no "-----BEGIN CERTIFICATE-----" block in it`);
  for (const [i, cert] of certs.entries()) {
    try {
      new X509Certificate(cert);
    } catch (err) {
      throw new ContainerdError("invalid_argument", `${where}: certificate ${i + 1} is not valid: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return certs;
}

/** What registry TLS trusts: Node's bundled roots, the system bundle, then `extra` (PEM texts). */
export function trustedCertificates(extra: readonly string[] = []): string[] {
  const extraCerts = extra.flatMap((pem, i) => parsePemCertificates(pem, `registry CA ${i + 1} of ${extra.length}`));
  return [...tls.rootCertificates, ...systemCaCertificates(), ...extraCerts];
}

/** One secure context per set of extra CAs: parsing ~300 roots costs ~100 ms, so not per client. */
const secureContexts = new Map<string, tls.SecureContext>();

function secureContextFor(extra: readonly string[]): tls.SecureContext {
  const key = extra.join("\n");
  let context = secureContexts.get(key);
  if (!context) {
    context = tls.createSecureContext({ ca: trustedCertificates(extra) });
    secureContexts.set(key, context);
  }
  return context;
}

/** OpenSSL's verify results and Node's name check: the server speaks TLS with a certificate we do not trust. */
const UNTRUSTED_CERTIFICATE_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
  "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
  "CERT_SIGNATURE_FAILURE",
  "CERT_NOT_YET_VALID",
  "CERT_HAS_EXPIRED",
  "CERT_REVOKED",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_CHAIN_TOO_LONG",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "INVALID_CA",
  "INVALID_PURPOSE",
  "PATH_LENGTH_EXCEEDED",
  "HOSTNAME_MISMATCH",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);
/** A TLS client hello answered by a plain-HTTP server: garbage records, or the connection dropped. */
const NOT_TLS_CODES = new Set(["EPROTO", "ERR_SSL_WRONG_VERSION_NUMBER", "ERR_SSL_PACKET_LENGTH_TOO_LONG", "ERR_SSL_HTTP_REQUEST", "ECONNRESET"]);

function errorCode(err: unknown): string {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : "";
}

/**
 * Why a TLS connection attempt failed, when that says something about the
 * server: it does not speak TLS, or its certificate is not trusted. Timeouts
 * and refused connections say nothing (plain HTTP would fare no better).
 * Meant for errors of the connect phase: a reset after the handshake is not "not TLS".
 */
export function classifyTlsFailure(err: unknown): "not_tls" | "untrusted_certificate" | undefined {
  const code = errorCode(err);
  if (UNTRUSTED_CERTIFICATE_CODES.has(code)) return "untrusted_certificate";
  const message = err instanceof Error ? err.message : "";
  if (NOT_TLS_CODES.has(code) || /wrong version number|packet length too long|http request/i.test(message)) return "not_tls";
  return undefined;
}

/** 127.0.0.0/8, localhost and ::1: Docker treats them as insecure registries by default. */
function isLoopback(bareHost: string): boolean {
  return bareHost === "localhost" || bareHost === "[::1]" || bareHost === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bareHost);
}

// ---------------------------------------------------------------- auth challenge

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses one WWW-Authenticate challenge: `Bearer realm="…",service="…",scope="…"`. */
export function parseWwwAuthenticate(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g;
  for (let p = re.exec(m[2]!); p; p = re.exec(m[2]!)) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? "").replace(/\\(.)/g, "$1");
  return { scheme: m[1]!.toLowerCase(), params };
}

// ---------------------------------------------------------------- client

export interface BlobStream {
  /** Where the stream starts in the blob. */
  from: number;
  chunks: AsyncIterable<Buffer>;
}

export interface FetchedManifest {
  descriptor: Descriptor;
  data: Buffer;
  parsed: ImageManifest | ImageIndex;
}

interface Response {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
}

function header(res: Response, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export type Scheme = "https" | "http";

export class RegistryClient {
  /** Bytes of blob and manifest bodies received, over the client's life. */
  bytesFetched = 0;
  private readonly dispatcher: Dispatcher;
  private readonly agent: Agent;
  private readonly credentials: Record<string, Credentials>;
  private readonly insecure: Set<string>;
  private readonly tokens = new Map<string, string>();
  /** The scheme settled on per registry host, so only an insecure host's first request probes. */
  private readonly schemes = new Map<string, Scheme>();
  /** Errors of connection setup (TCP + TLS handshake), as opposed to later socket errors. */
  private readonly connectErrors = new WeakSet<Error>();
  private readonly timeouts: { connect: number; tlsConnect: number; headers: number; body: number };

  constructor(options: RegistryOptions = {}) {
    this.credentials = options.credentials ?? {};
    this.insecure = new Set(options.insecureHosts ?? []);
    const connect = options.connectTimeoutMs ?? 10_000;
    const headers = options.headersTimeoutMs ?? 10_000;
    // A server that accepts TCP and never answers the handshake has not answered at all:
    // the handshake must not outlast the headers timeout.
    this.timeouts = { connect, tlsConnect: Math.min(connect, headers), headers, body: options.bodyTimeoutMs ?? 60_000 };
    const plainConnector = buildConnector({ timeout: this.timeouts.connect });
    const tlsConnector = buildConnector({ timeout: this.timeouts.tlsConnect, secureContext: secureContextFor(options.ca ?? []) });
    const connector: buildConnector.connector = (opts, callback) =>
      (opts.protocol === "https:" ? tlsConnector : plainConnector)(opts, (...args) => {
        if (args[0]) this.connectErrors.add(args[0]);
        callback(...args);
      });
    this.agent = new Agent({ connect: connector, headersTimeout: this.timeouts.headers, bodyTimeout: this.timeouts.body });
    // Blob GETs commonly redirect to object storage; undici drops Authorization across origins.
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: 5 }));
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /** Loopback hosts and configured insecure hosts may fall back to plain HTTP. */
  isInsecure(domain: string): boolean {
    const bare = domain.replace(/:\d+$/, "");
    return isLoopback(bare) || this.insecure.has(domain) || this.insecure.has(bare);
  }

  /**
   * The scheme this client uses for a registry host: always "https" for a
   * secure host; for an insecure one what its first request settled on, or
   * undefined before that request.
   */
  schemeOf(domain: string): Scheme | undefined {
    return this.schemes.get(domain) ?? (this.isInsecure(domain) ? undefined : "https");
  }

  /** Base URL of a registry host, with the scheme settled on (HTTPS until an insecure host proved otherwise). */
  baseUrl(domain: string): string {
    const host = domain === "docker.io" ? "registry-1.docker.io" : domain;
    return `${this.schemes.get(domain) ?? "https"}://${host}`;
  }

  /** Resolves the reference's tag (or digest) to its top manifest or index. */
  async resolve(ref: ImageReference): Promise<FetchedManifest> {
    const target = ref.digest ?? ref.tag ?? "latest";
    return this.fetchManifest(ref, target, undefined);
  }

  /**
   * HEAD of the reference's manifest: its descriptor without the body (so a
   * pull of content already stored transfers nothing), or undefined when the
   * registry does not say the digest. A missing tag is a "not_found" error.
   */
  async headManifest(ref: ImageReference): Promise<Descriptor | undefined> {
    const tagOrDigest = ref.digest ?? ref.tag ?? "latest";
    const what = `registry ${ref.domain}: manifest ${ref.path}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;
    const res = await this.request(ref, `/v2/${ref.path}/manifests/${tagOrDigest}`, { accept: ACCEPT }, what, "HEAD");
    await res.body.dump();
    if (res.statusCode === 404) throw this.manifestNotFound(ref, tagOrDigest);
    if (res.statusCode < 200 || res.statusCode >= 300) return undefined;
    const digest = header(res, "docker-content-digest");
    const mediaType = header(res, "content-type")?.split(";")[0]?.trim();
    const size = Number(header(res, "content-length"));
    if (digest === undefined || !DIGEST.test(digest) || mediaType === undefined || !Number.isSafeInteger(size) || size <= 0 || size > MAX_MANIFEST_BYTES) return undefined;
    if (![...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].includes(mediaType)) return undefined;
    if (ref.digest !== undefined && digest !== ref.digest) return undefined;
    return { mediaType, digest, size };
  }

  private manifestNotFound(ref: ImageReference, tagOrDigest: string): ContainerdError {
    const missing = tagOrDigest.startsWith("sha256:") ? `digest ${tagOrDigest}` : `tag ${JSON.stringify(tagOrDigest)}`;
    return new ContainerdError("not_found", `image ${formatReference(ref)} not found: registry ${ref.domain} has no ${missing} in repository ${ref.path}`);
  }

  /** Fetches a manifest or index by tag or digest; with `expected`, checks its digest and size. */
  async fetchManifest(ref: ImageReference, tagOrDigest: string, expected: Descriptor | undefined): Promise<FetchedManifest> {
    const what = `registry ${ref.domain}: manifest ${formatReference({ domain: ref.domain, path: ref.path })}${tagOrDigest.startsWith("sha256:") ? "@" : ":"}${tagOrDigest}`;
    const res = await this.request(ref, `/v2/${ref.path}/manifests/${tagOrDigest}`, { accept: ACCEPT }, what);
    if (res.statusCode === 404) {
      await res.body.dump();
      throw this.manifestNotFound(ref, tagOrDigest);
    }
    await this.expectOk(res, what);
    const data = await this.readLimited(res, MAX_MANIFEST_BYTES, what);
    const digest = sha256Hex(data);
    const announced = header(res, "docker-content-digest");
    if (announced !== undefined && DIGEST.test(announced) && announced !== digest) {
      throw new ContainerdError("digest_mismatch", `${what}: content has digest ${digest}, the registry announced ${announced}`);
    }
    if (tagOrDigest.startsWith("sha256:") && digest !== tagOrDigest) {
      throw new ContainerdError("digest_mismatch", `${what}: content has digest ${digest}, expected ${tagOrDigest}`);
    }
    if (expected && data.length !== expected.size) {
      throw new ContainerdError("digest_mismatch", `${what}: ${data.length} bytes, the descriptor says ${expected.size}`);
    }
    const contentType = header(res, "content-type")?.split(";")[0]?.trim();
    let parsed: ImageManifest | ImageIndex;
    try {
      parsed = parseManifest(data, expected?.mediaType ?? contentType);
    } catch (err) {
      throw registryError(what, `invalid manifest: ${err instanceof Error ? err.message : String(err)}`);
    }
    return { descriptor: { mediaType: parsed.mediaType, digest, size: data.length }, data, parsed };
  }

  /** Fetches a small blob (an image config) whole, checking digest and size. */
  async fetchSmallBlob(ref: ImageReference, desc: Descriptor): Promise<Buffer> {
    if (desc.size > MAX_CONFIG_BYTES) throw registryError(`registry ${ref.domain}: blob ${desc.digest}`, `${desc.size} bytes is too large for a config`);
    const chunks: Buffer[] = [];
    for await (const chunk of (await this.openBlob(ref, desc, 0)).chunks) chunks.push(chunk);
    const data = Buffer.concat(chunks);
    const digest = sha256Hex(data);
    if (digest !== desc.digest) {
      throw new ContainerdError("digest_mismatch", `blob ${desc.digest} from ${ref.domain}/${ref.path}: content has digest ${digest}, expected ${desc.digest}`);
    }
    return data;
  }

  /**
   * Opens a blob from `offset` (a Range request). `from` says where the stream
   * really starts: 0 when the registry ignored the range. The stream yields
   * nothing past the descriptor's size and fails when it ends short.
   */
  async openBlob(ref: ImageReference, desc: Descriptor, offset: number): Promise<BlobStream> {
    const what = `registry ${ref.domain}: blob ${desc.digest} of ${ref.path}`;
    const headers: Record<string, string> = {};
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await this.request(ref, `/v2/${ref.path}/blobs/${desc.digest}`, headers, what);
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new ContainerdError("not_found", `${what}: not found`);
    }
    let from = 0;
    if (res.statusCode === 206 && offset > 0) from = offset;
    else await this.expectOk(res, what);
    const length = header(res, "content-length");
    if (length !== undefined && from + Number(length) > desc.size) {
      await res.body.dump();
      throw new ContainerdError("digest_mismatch", `${what}: registry sends ${from + Number(length)} bytes, the descriptor says ${desc.size}`);
    }
    return { from, chunks: this.blobChunks(res, desc, from, what) };
  }

  private async *blobChunks(res: Response, desc: Descriptor, from: number, what: string): AsyncGenerator<Buffer> {
    let received = from;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        received += chunk.length;
        this.bytesFetched += chunk.length;
        if (received > desc.size) throw new ContainerdError("digest_mismatch", `${what}: registry sent more than the descriptor's ${desc.size} bytes`);
        yield chunk;
      }
    } catch (err) {
      if (err instanceof ContainerdError) throw err;
      throw registryError(what, `download failed after ${received} bytes: ${err instanceof Error ? err.message : String(err)}`, err);
    } finally {
      if (!res.body.destroyed) res.body.destroy();
    }
    if (received !== desc.size) {
      throw new ContainerdError("digest_mismatch", `${what}: received ${received} bytes, the descriptor says ${desc.size}`);
    }
  }

  // ---------------------------------------------------------------- transport + auth

  private async request(ref: ImageReference, urlPath: string, headers: Record<string, string>, what: string, method: "GET" | "HEAD" = "GET"): Promise<Response> {
    const scope = `repository:${ref.path}:pull`;
    const tokenKey = `${ref.domain} ${scope}`;
    const send = (authorization: string | undefined) =>
      this.sendToRegistry(ref.domain, urlPath, authorization ? { ...headers, authorization } : headers, what, method);

    let res = await send(this.tokens.get(tokenKey));
    if (res.statusCode !== 401) return res;
    const challengeHeader = header(res, "www-authenticate");
    await res.body.dump();
    const challenge = challengeHeader ? parseWwwAuthenticate(challengeHeader) : undefined;
    const creds = this.credentials[ref.domain];
    let authorization: string;
    if (challenge?.scheme === "bearer") {
      authorization = `Bearer ${await this.fetchToken(ref, challenge, scope, creds)}`;
    } else if (challenge?.scheme === "basic") {
      if (!creds) throw new ContainerdError("permission_denied", `${what}: the registry requires authentication (Basic) and no credentials are configured for ${ref.domain}`);
      authorization = basic(creds);
    } else {
      throw new ContainerdError("permission_denied", `${what}: unauthorized (401) with an unsupported challenge ${JSON.stringify(challengeHeader ?? "")}`);
    }
    this.tokens.set(tokenKey, authorization);
    res = await send(authorization);
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump();
      this.tokens.delete(tokenKey);
      throw new ContainerdError(
        "permission_denied",
        `${what}: the registry rejected the ${creds ? `credentials of user ${JSON.stringify(creds.username)}` : "anonymous token"} (${res.statusCode})`,
      );
    }
    return res;
  }

  private async fetchToken(ref: ImageReference, challenge: Challenge, scope: string, creds: Credentials | undefined): Promise<string> {
    const realm = challenge.params.realm;
    const what = `registry ${ref.domain}: token`;
    if (!realm) throw registryError(what, "Bearer challenge without a realm");
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw registryError(what, `realm ${JSON.stringify(realm)} is not a URL`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") throw registryError(what, `realm ${realm} is not http(s)`);
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    url.searchParams.set("scope", challenge.params.scope ?? scope);
    const res = await this.send(url.toString(), creds ? { authorization: basic(creds) } : {}, `${what} from ${url.origin}`);
    if (res.statusCode === 401 || res.statusCode === 403) {
      await res.body.dump();
      throw new ContainerdError("permission_denied", `${what}: ${url.origin} refused a token (${res.statusCode})${creds ? ` for user ${JSON.stringify(creds.username)}` : " without credentials"}`);
    }
    await this.expectOk(res, what);
    const data = await this.readLimited(res, 1024 * 1024, what);
    let json: unknown;
    try {
      json = JSON.parse(data.toString("utf8"));
    } catch {
      throw registryError(what, "token response is not JSON");
    }
    const token = isRecord(json) ? (json.token ?? json.access_token) : undefined;
    if (typeof token !== "string" || token === "") throw registryError(what, "token response has no token");
    return token;
  }

  /**
   * A request to a registry host. Secure hosts: HTTPS only. Insecure hosts, the
   * first time: HTTPS, then plain HTTP when the TLS handshake showed the server
   * does not speak TLS or presents a certificate we do not trust; the outcome
   * is kept for every later request. Requests are GET/HEAD, so a retry is safe.
   */
  private async sendToRegistry(domain: string, urlPath: string, headers: Record<string, string>, what: string, method: "GET" | "HEAD"): Promise<Response> {
    const settled = this.schemes.get(domain);
    if (settled !== undefined || !this.isInsecure(domain)) return this.send(`${this.baseUrl(domain)}${urlPath}`, headers, what, method);

    const httpsUrl = `${this.baseUrl(domain)}${urlPath}`;
    let tlsFailure: { kind: "not_tls" | "untrusted_certificate"; err: unknown };
    try {
      const res = await this.attempt(httpsUrl, headers, method);
      this.schemes.set(domain, "https");
      return res;
    } catch (err) {
      const kind = err instanceof Error && this.connectErrors.has(err) ? classifyTlsFailure(err) : undefined;
      if (kind === undefined) throw this.transportError(err, httpsUrl, what);
      tlsFailure = { kind, err };
    }

    const httpUrl = `http://${httpsUrl.slice("https://".length)}`;
    if (tlsFailure.kind === "not_tls") {
      const res = await this.send(httpUrl, headers, what, method);
      this.schemes.set(domain, "http");
      return res;
    }
    // The server speaks TLS with a certificate we do not trust: plain HTTP works only
    // if it also serves that; a TLS-only server answers 400 (Go, nginx) or hangs up.
    let res: Response;
    try {
      res = await this.attempt(httpUrl, headers, method);
    } catch (err) {
      throw this.untrustedCertificateError(httpsUrl, tlsFailure.err, what, `plain HTTP failed too (${err instanceof Error ? err.message : String(err)})`);
    }
    if (res.statusCode === 400) {
      const body = (await this.readLimited(res, 4096, what).catch(() => Buffer.alloc(0))).toString("utf8").trim().slice(0, 200);
      throw this.untrustedCertificateError(httpsUrl, tlsFailure.err, what, `plain HTTP is refused (HTTP 400${body ? `: ${body}` : ""})`);
    }
    this.schemes.set(domain, "http");
    return res;
  }

  /** A request whose transport errors become ContainerdErrors naming the origin. */
  private async send(url: string, headers: Record<string, string>, what: string, method: "GET" | "HEAD" = "GET"): Promise<Response> {
    try {
      return await this.attempt(url, headers, method);
    } catch (err) {
      throw this.transportError(err, url, what);
    }
  }

  private async attempt(url: string, headers: Record<string, string>, method: "GET" | "HEAD"): Promise<Response> {
    const { origin } = new URL(url);
    const res = await this.dispatcher.request({ origin, path: url.slice(origin.length), method, headers });
    return { statusCode: res.statusCode, headers: res.headers as Response["headers"], body: res.body };
  }

  private transportError(err: unknown, url: string, what: string): ContainerdError {
    if (err instanceof ContainerdError) return err;
    const code = errorCode(err);
    if (url.startsWith("https:") && err instanceof Error && this.connectErrors.has(err) && classifyTlsFailure(err) === "untrusted_certificate") {
      return this.untrustedCertificateError(url, err, what);
    }
    const origin = new URL(url).origin;
    const reason = err instanceof Error ? err.message : String(err);
    const timeout = code === "UND_ERR_CONNECT_TIMEOUT" || code === "UND_ERR_HEADERS_TIMEOUT";
    const connectLimit = url.startsWith("https:") ? this.timeouts.tlsConnect : this.timeouts.connect;
    return new ContainerdError(
      "unavailable",
      `${what}: cannot reach ${origin}: ${timeout ? `no answer within ${code === "UND_ERR_CONNECT_TIMEOUT" ? connectLimit : this.timeouts.headers} ms` : reason}${code && !timeout ? ` (${code})` : ""}`,
      { cause: err },
    );
  }

  private untrustedCertificateError(url: string, err: unknown, what: string, fallback?: string): ContainerdError {
    const { origin, host } = new URL(url);
    const reason = `${err instanceof Error ? err.message : String(err)}${errorCode(err) ? ` (${errorCode(err)})` : ""}`;
    return new ContainerdError(
      "registry",
      `${what}: the TLS certificate of ${origin} is not trusted: ${reason}${fallback ? `; ${fallback}` : ""}. ` +
        `If ${host} uses a private CA, give its certificate as a PEM file with MEMOH_REGISTRY_CA ([workspace] registry_ca)`,
      { cause: err },
    );
  }

  private async expectOk(res: Response, what: string): Promise<void> {
    if (res.statusCode >= 200 && res.statusCode < 300) return;
    let detail = "";
    try {
      detail = (await this.readLimited(res, 4096, what)).toString("utf8").trim().slice(0, 300);
    } catch {
      // the status alone must do
    }
    if (res.statusCode === 403) throw new ContainerdError("permission_denied", `${what}: forbidden (403) ${detail}`.trim());
    throw registryError(what, `HTTP ${res.statusCode}${detail ? `: ${detail}` : ""}`);
  }

  private async readLimited(res: Response, limit: number, what: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      total += chunk.length;
      this.bytesFetched += chunk.length;
      if (total > limit) {
        res.body.destroy();
        throw registryError(what, `response larger than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  }
}

function basic(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
}

export function sha256Hex(data: Buffer | Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}
