// A private OCI registry for integration tests: Debian's docker-registry
// ("distribution") on 127.0.0.1:<free port>, storage and config in a temp dir,
// optionally behind htpasswd Basic auth and/or serving TLS only (with a certificate
// the caller made); plus pushImage() through the registry HTTP API (monolithic
// uploads) and a tiny fake registry (node http) that can serve a blob with the
// wrong bytes or demand Bearer tokens.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, request, type Dispatcher } from "undici";
import { makeBlob, type Blob, type OciImage } from "./images.js";

export interface RegistryEnv {
  /** "127.0.0.1:<port>": the host part of image references. */
  readonly host: string;
  readonly port: number;
  readonly dir: string;
  /** "http://<host>", or "https://<host>" when started with `tls`. */
  readonly url: string;
  readonly auth?: { username: string; password: string };
  /** Pushes an image as <host>/<repository>:<tag>; returns that reference. */
  push(image: OciImage, repository: string, tag?: string): Promise<string>;
  /** Pushes the images by digest and an OCI index over them (one per platform) as <repository>:<tag>. */
  pushIndex(entries: Array<{ image: OciImage; platform: { os: string; architecture: string; variant?: string } }>, repository: string, tag?: string): Promise<{ ref: string; index: Blob }>;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  /** Basic auth through htpasswd (bcrypt, as `htpasswd -Bbn` writes it). */
  auth?: { username: string; password: string };
  /**
   * Serve HTTPS only (distribution's http.tls): PEM files of the server
   * certificate and key, and the PEM of the CA that signed it (trusted by the
   * readiness check and pushes).
   */
  tls?: { certificate: string; key: string; ca: string };
  baseDir?: string;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

const running = new Map<string, ChildProcess>();
process.once("exit", () => {
  for (const child of running.values()) child.kill("SIGKILL");
});

export async function startRegistry(options: StartRegistryOptions = {}): Promise<RegistryEnv> {
  const dir = fs.mkdtempSync(path.join(options.baseDir ?? process.env.MEMOH_TEST_TMPDIR ?? os.tmpdir(), "memoh-registry-"));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const q = (s: string) => JSON.stringify(s);
  let authYaml = "";
  if (options.auth) {
    const line = execFileSync("htpasswd", ["-Bbn", options.auth.username, options.auth.password], { encoding: "utf8" });
    fs.writeFileSync(path.join(dir, "htpasswd"), line.trim() + "\n");
    authYaml = `auth:\n  htpasswd:\n    realm: memoh-test\n    path: ${q(path.join(dir, "htpasswd"))}\n`;
  }
  const tlsYaml = options.tls ? `  tls:\n    certificate: ${q(options.tls.certificate)}\n    key: ${q(options.tls.key)}\n` : "";
  const url = `${options.tls ? "https" : "http"}://${host}`;
  const dispatcher: Dispatcher | undefined = options.tls ? new Agent({ connect: { ca: options.tls.ca } }) : undefined;
  const configPath = path.join(dir, "config.yml");
  fs.writeFileSync(
    configPath,
    `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${q(path.join(dir, "data"))}
  delete:
    enabled: true
http:
  addr: ${host}
${tlsYaml}${authYaml}`,
  );
  const logPath = path.join(dir, "registry.log");
  const logFd = fs.openSync(logPath, "a");
  const child = spawn("docker-registry", ["serve", configPath], { stdio: ["ignore", logFd, logFd] });
  fs.closeSync(logFd);
  child.unref();
  running.set(dir, child);
  let exited: string | undefined;
  child.once("exit", (code, signal) => (exited = `docker-registry exited (${signal ?? code})`));
  child.once("error", (err) => (exited = `cannot start docker-registry: ${err.message}`));

  const stop = async () => {
    running.delete(dir);
    await dispatcher?.close();
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 3000);
      await gone;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited !== undefined) {
      const log = fs.existsSync(logPath) ? fs.readFileSync(logPath, "utf8").slice(-2000) : "";
      await stop();
      throw new Error(`${exited}\n${log}`);
    }
    try {
      const res = await request(`${url}/v2/`, { headersTimeout: 1000, ...(dispatcher ? { dispatcher } : {}) });
      await res.body.dump();
      if (res.statusCode === 200 || res.statusCode === 401) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not answer on ${host}`);
    }
    await sleep(50);
  }

  const authHeader: Record<string, string> = options.auth
    ? { authorization: `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`).toString("base64")}` }
    : {};
  return {
    host,
    port,
    dir,
    url,
    ...(options.auth ? { auth: options.auth } : {}),
    push: (image, repository, tag = "latest") => pushImage(url, authHeader, image, repository, tag, dispatcher).then(() => `${host}/${repository}:${tag}`),
    pushIndex: async (entries, repository, tag = "latest") => {
      for (const e of entries) await pushImage(url, authHeader, e.image, repository, e.image.manifest.digest, dispatcher);
      const data = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: entries.map((e) => ({ mediaType: e.image.manifest.mediaType, digest: e.image.manifest.digest, size: e.image.manifest.size, platform: e.platform })),
        }),
      );
      const index = makeBlob("application/vnd.oci.image.index.v1+json", data);
      await putManifest(url, authHeader, repository, tag, index, dispatcher);
      return { ref: `${host}/${repository}:${tag}`, index };
    },
    stop,
  };
}

async function pushBlob(base: string, auth: Record<string, string>, repository: string, blob: Blob, dispatcher?: Dispatcher): Promise<void> {
  const via = dispatcher ? { dispatcher } : {};
  const head = await request(`${base}/v2/${repository}/blobs/${blob.digest}`, { method: "HEAD", headers: auth, ...via });
  await head.body.dump();
  if (head.statusCode === 200) return;
  const start = await request(`${base}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: auth, ...via });
  await start.body.dump();
  const location = start.headers.location;
  if (start.statusCode !== 202 || typeof location !== "string") throw new Error(`push ${blob.digest}: upload start answered ${start.statusCode}`);
  const url = new URL(location, base);
  url.searchParams.set("digest", blob.digest);
  const put = await request(url, {
    method: "PUT",
    headers: { ...auth, "content-type": "application/octet-stream", "content-length": String(blob.size) },
    body: blob.data,
    ...via,
  });
  const text = await put.body.text();
  if (put.statusCode !== 201) throw new Error(`push ${blob.digest}: upload answered ${put.statusCode}: ${text}`);
}

export async function pushImage(base: string, auth: Record<string, string>, image: OciImage, repository: string, tag: string, dispatcher?: Dispatcher): Promise<void> {
  for (const blob of [...image.layers, image.config]) await pushBlob(base, auth, repository, blob, dispatcher);
  await putManifest(base, auth, repository, tag, image.manifest, dispatcher);
}

async function putManifest(base: string, auth: Record<string, string>, repository: string, tag: string, manifest: Blob, dispatcher?: Dispatcher): Promise<void> {
  const res = await request(`${base}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { ...auth, "content-type": manifest.mediaType },
    body: manifest.data,
    ...(dispatcher ? { dispatcher } : {}),
  });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`push manifest ${repository}:${tag}: ${res.statusCode}: ${text}`);
}

export interface FakeRegistry {
  readonly host: string;
  /** The reference that resolves to the served image. */
  readonly ref: string;
  /** Requests answered, by path (tokens included). */
  readonly requests: string[];
  stop(): Promise<void>;
}

export interface FakeRegistryOptions {
  /** This blob comes back with its bytes changed (same length): only a digest check notices. */
  corruptDigest?: string;
  /**
   * Bearer-token auth as Docker Hub does it: /v2/ answers 401 with a challenge
   * naming this server's /token realm, which hands out a token for these Basic credentials.
   */
  bearer?: { username: string; password: string };
}

/** A tiny registry (node http) serving one image as <host>/fake/image:latest. */
export async function startFakeRegistry(image: OciImage, options: FakeRegistryOptions = {}): Promise<FakeRegistry> {
  const blobs = new Map<string, Buffer>();
  for (const b of [image.config, ...image.layers]) {
    let data = b.data;
    if (b.digest === options.corruptDigest) {
      data = Buffer.from(b.data);
      data[data.length - 1] = data[data.length - 1]! ^ 0xff;
    }
    blobs.set(b.digest, data);
  }
  const token = `tok-${Math.random().toString(36).slice(2)}`;
  const requests: string[] = [];
  let host = "";
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    requests.push(url.pathname);
    const send = (status: number, body: Buffer, headers: Record<string, string> = {}) => {
      res.writeHead(status, { "content-length": String(body.length), ...headers });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (options.bearer) {
      if (url.pathname === "/token") {
        const expected = `Basic ${Buffer.from(`${options.bearer.username}:${options.bearer.password}`).toString("base64")}`;
        if (req.headers.authorization !== expected || url.searchParams.get("service") !== "fake-registry" || url.searchParams.get("scope") !== "repository:fake/image:pull") {
          return send(401, Buffer.from('{"errors":[{"code":"UNAUTHORIZED"}]}'), { "content-type": "application/json" });
        }
        return send(200, Buffer.from(JSON.stringify({ token })), { "content-type": "application/json" });
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        return send(401, Buffer.from('{"errors":[{"code":"UNAUTHORIZED"}]}'), {
          "content-type": "application/json",
          "www-authenticate": `Bearer realm="http://${host}/token",service="fake-registry",scope="repository:fake/image:pull"`,
        });
      }
    }
    if (url.pathname === "/v2/") return send(200, Buffer.from("{}"), { "content-type": "application/json" });
    if (url.pathname === "/v2/fake/image/manifests/latest" || url.pathname === `/v2/fake/image/manifests/${image.manifest.digest}`) {
      return send(200, image.manifest.data, { "content-type": image.manifest.mediaType, "docker-content-digest": image.manifest.digest });
    }
    const m = /^\/v2\/fake\/image\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    const blob = m ? blobs.get(m[1]!) : undefined;
    if (blob) return send(200, blob, { "content-type": "application/octet-stream" });
    return send(404, Buffer.from('{"errors":[{"code":"NOT_FOUND"}]}'), { "content-type": "application/json" });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  if (typeof addr !== "object" || addr === null) throw new Error("fake registry: no address");
  host = `127.0.0.1:${addr.port}`;
  return {
    host,
    ref: `${host}/fake/image:latest`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
