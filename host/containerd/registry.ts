// An OCI distribution (registry v2) client over undici: resolve a tag to a
// manifest, fetch manifests and blobs (as streams), each checked against its
// digest and size. Anonymous, Basic and Bearer-token auth (registry-auth.ts
// decides where credentials may go); TLS trust in registry-tls.ts; what the
// documents mean in oci.ts. Loopback and configured insecure hosts are treated
// like Docker's insecure registries: HTTPS first, plain HTTP when the server
// does not speak TLS (or its certificate is not trusted), remembered per host
// for the client's life.
// One file: resolving, fetching and the per-host HTTPS/HTTP fallback share the client's
// dispatcher and token state (auth rules, TLS and the OCI documents are already apart).
import { Agent, buildConnector, interceptors, type Dispatcher } from "undici";
import { ContainerdError } from "./errors.js";
import { DIGEST, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, parseManifest, sha256Digest, type Descriptor, type ImageIndex, type ImageManifest } from "./oci.js";
import { formatReference, type ImageReference } from "./reference.js";
import { basicAuthorization, chooseChallenge, credentialsRefusal, parseWwwAuthenticate, type Challenge, type Credentials } from "./registry-auth.js";
import { classifyTlsFailure, errorCode, secureContextFor } from "./registry-tls.js";

const ACCEPT = [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES].join(", ");

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

function registryError(what: string, why: string, cause?: unknown): ContainerdError {
  return new ContainerdError("registry", `${what}: ${why}`, cause === undefined ? undefined : { cause });
}

/** 127.0.0.0/8, localhost and ::1: Docker treats them as insecure registries by default. */
function isLoopback(bareHost: string): boolean {
  return bareHost === "localhost" || bareHost === "[::1]" || bareHost === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bareHost);
}

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

/** Every value of a header that may be sent several times (WWW-Authenticate), joined as one list. */
function headerList(res: Response, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(", ") : v;
}

type Scheme = "https" | "http";

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
    return `${this.schemes.get(domain) ?? "https"}://${this.registryAuthority(domain)}`;
  }

  /** The host[:port] a registry's requests go to. */
  private registryAuthority(domain: string): string {
    return domain === "docker.io" ? "registry-1.docker.io" : domain;
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
    const digest = sha256Digest(data);
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
    const digest = sha256Digest(data);
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
    // Only ever to the registry's own host (HTTPS, or plain HTTP for an insecure one).
    // A redirect elsewhere (blobs in object storage) goes without the Authorization
    // header: undici's redirect handler drops it when the origin changes.
    const send = (authorization: string | undefined) =>
      this.sendToRegistry(ref.domain, urlPath, authorization ? { ...headers, authorization } : headers, what, method);

    let res = await send(this.tokens.get(tokenKey));
    if (res.statusCode !== 401) return res;
    const challengeHeader = headerList(res, "www-authenticate");
    await res.body.dump();
    const challenge = chooseChallenge(challengeHeader ? parseWwwAuthenticate(challengeHeader) : []);
    const creds = this.credentials[ref.domain];
    let authorization: string;
    if (challenge?.scheme === "bearer") {
      authorization = `Bearer ${await this.fetchToken(ref, challenge, scope, creds)}`;
    } else if (challenge?.scheme === "basic") {
      if (!creds) throw new ContainerdError("permission_denied", `${what}: the registry requires authentication (Basic) and no credentials are configured for ${ref.domain}`);
      authorization = basicAuthorization(creds);
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

  /**
   * A Bearer token from the realm the registry named, asked for with the
   * registry's credentials when there are some. Credentials never go to a realm
   * on plain HTTP at another host: that is refused (not tried anonymously), so a
   * misconfigured or hostile registry shows up as an error instead of a leak.
   */
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
    if (creds) {
      const refusal = credentialsRefusal(url, this.registryAuthority(ref.domain), this.isInsecure(ref.domain));
      if (refusal !== undefined) {
        throw registryError(what, `refusing to send the credentials of user ${JSON.stringify(creds.username)} to the token realm ${url.origin}: ${refusal}; credentials go only over HTTPS, or over plain HTTP to an insecure registry's own host`);
      }
    }
    if (challenge.params.service) url.searchParams.set("service", challenge.params.service);
    url.searchParams.set("scope", challenge.params.scope ?? scope);
    const res = await this.send(url.toString(), creds ? { authorization: basicAuthorization(creds) } : {}, `${what} from ${url.origin}`);
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
    const body = typeof json === "object" && json !== null ? (json as { token?: unknown; access_token?: unknown }) : {};
    const token = body.token ?? body.access_token;
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
