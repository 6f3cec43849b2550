// Registry auth: WWW-Authenticate headers with several challenges, and where
// credentials may go, proven against real HTTP(S) servers on 127.0.0.1 (two
// ports are two hosts: host:port is the authority). A token realm on plain HTTP
// at another authority is refused before any request is made to it; a redirect
// to another authority carries no Authorization header; an insecure registry's
// own host still gets credentials over plain HTTP.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import type net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ContainerdError } from "../../host/containerd/errors.js";
import { parseReference } from "../../host/containerd/reference.js";
import { chooseChallenge, credentialsRefusal, parseWwwAuthenticate } from "../../host/containerd/registry-auth.js";
import { RegistryClient } from "../../host/containerd/registry.js";

describe("WWW-Authenticate", () => {
  test("several challenges in one header, quoted commas and escapes kept in their values", () => {
    const header = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push", Basic realm="Registry, \\"main\\""';
    assert.deepEqual(parseWwwAuthenticate(header), [
      { scheme: "bearer", params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull,push" } },
      { scheme: "basic", params: { realm: 'Registry, "main"' } },
    ]);
  });

  test("Basic first, spaces around '=', unquoted values, a token68 challenge, parameter names in any case", () => {
    assert.deepEqual(parseWwwAuthenticate('Basic realm = "r" ,  Negotiate abc+/==, BEARER Realm=https://a/t, Service=s'), [
      { scheme: "basic", params: { realm: "r" } },
      { scheme: "negotiate", params: {}, token68: "abc+/==" },
      { scheme: "bearer", params: { realm: "https://a/t", service: "s" } },
    ]);
    assert.deepEqual(parseWwwAuthenticate("Basic"), [{ scheme: "basic", params: {} }]);
  });

  test("junk is skipped, not mistaken for a challenge", () => {
    assert.deepEqual(parseWwwAuthenticate(""), []);
    assert.deepEqual(parseWwwAuthenticate('=oops, "quoted, thing", Bearer realm="https://a/t"'), [{ scheme: "bearer", params: { realm: "https://a/t" } }]);
  });

  test("Bearer is answered when offered, else Basic; other schemes are not", () => {
    assert.equal(chooseChallenge(parseWwwAuthenticate('Basic realm="r", Bearer realm="https://a/t"'))?.scheme, "bearer");
    assert.equal(chooseChallenge(parseWwwAuthenticate('Negotiate abc, Basic realm="r"'))?.scheme, "basic");
    assert.equal(chooseChallenge(parseWwwAuthenticate("Negotiate abc")), undefined);
  });
});

describe("where credentials may go", () => {
  test("HTTPS anywhere the registry named; plain HTTP only to an insecure registry's own host:port", () => {
    const may = (url: string, registry: string, insecure: boolean) => credentialsRefusal(new URL(url), registry, insecure);
    assert.equal(may("https://auth.example/token", "registry.example", false), undefined);
    assert.equal(may("https://127.0.0.1:6000/token", "127.0.0.1:5000", true), undefined);
    assert.equal(may("http://127.0.0.1:5000/token", "127.0.0.1:5000", true), undefined);
    assert.equal(may("http://mirror.lan:80/token", "mirror.lan", true), undefined, "the default port is the same authority");
    assert.match(may("http://127.0.0.1:6000/token", "127.0.0.1:5000", true) ?? "", /http:\/\/127\.0\.0\.1:6000 is plain HTTP on a host other than the registry's own \(127\.0\.0\.1:5000\)/);
    assert.match(may("http://auth.example/token", "registry.example", false) ?? "", /other than the registry's own/);
    assert.match(may("http://registry.example/token", "registry.example", false) ?? "", /registry\.example is not an insecure registry/);
    assert.match(may("ftp://registry.example/token", "registry.example", false) ?? "", /not HTTP\(S\)/);
  });
});

// ---------------------------------------------------------------- real servers

interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

interface TestServer {
  /** "127.0.0.1:<port>" */
  host: string;
  requests: SeenRequest[];
  close(): Promise<void>;
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void;

async function startServer(handler: Handler, tlsOptions?: { key: string; cert: string }): Promise<TestServer> {
  const requests: SeenRequest[] = [];
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://x");
    requests.push({ method: req.method ?? "", path: url.pathname, authorization: req.headers.authorization });
    handler(req, res, url);
  };
  const server = tlsOptions ? https.createServer(tlsOptions, listener) : http.createServer(listener);
  // TLS probes of the client (loopback registries are tried over HTTPS first) end here.
  server.on("clientError", (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    host: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function send(res: http.ServerResponse, status: number, body: Buffer | string, headers: Record<string, string> = {}): void {
  const data = Buffer.from(body);
  res.writeHead(status, { "content-length": String(data.length), ...headers });
  res.end(res.req.method === "HEAD" ? undefined : data);
}

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;

const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
    layers: [],
  }),
);
const configDesc = { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length };
const USER = "bot";
const PASSWORD = "s3cret";

/**
 * A registry serving one manifest and one blob at test/image. It demands
 * `auth`: Basic credentials, or a Bearer token from `realm` (a function of its
 * own host, so the realm may be itself). `blobAt` says where blob GETs are sent:
 * answered here, or redirected (307) to a URL.
 */
async function startRegistry(options: {
  auth: { basic: true } | { realm: (self: string) => string; token: string };
  blobAt?: (self: string) => string | undefined;
}): Promise<TestServer> {
  let self = "";
  const server = await startServer((req, res, url) => {
    const auth = options.auth;
    if (url.pathname === "/token" && "token" in auth) {
      if (req.headers.authorization !== basic(USER, PASSWORD)) return send(res, 401, "{}");
      return send(res, 200, JSON.stringify({ token: auth.token }), { "content-type": "application/json" });
    }
    const expected = "token" in auth ? `Bearer ${auth.token}` : basic(USER, PASSWORD);
    if (req.headers.authorization !== expected) {
      const challenge = "token" in auth ? `Bearer realm="${auth.realm(self)}",service="test-registry"` : 'Basic realm="test, registry"';
      return send(res, 401, '{"errors":[{"code":"UNAUTHORIZED"}]}', { "www-authenticate": challenge, "content-type": "application/json" });
    }
    if (url.pathname === "/v2/test/image/manifests/latest") {
      return send(res, 200, manifest, { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": sha256(manifest) });
    }
    if (url.pathname === `/v2/test/image/blobs/${configDesc.digest}`) {
      const location = options.blobAt?.(self);
      if (location) return send(res, 307, "", { location });
      return send(res, 200, config, { "content-type": "application/octet-stream" });
    }
    if (url.pathname === `/internal/blobs/${configDesc.digest}`) return send(res, 200, config);
    return send(res, 404, "{}");
  });
  self = server.host;
  return server;
}

/** Object storage: hands out the blob to anyone, and remembers what it was sent. */
function startStorage(): Promise<TestServer> {
  return startServer((_req, res, url) => (url.pathname === `/storage/${configDesc.digest}` ? send(res, 200, config) : send(res, 404, "")));
}

describe("credentials against real servers on 127.0.0.1", () => {
  const servers: TestServer[] = [];
  const track = async (started: Promise<TestServer>) => {
    const server = await started;
    servers.push(server);
    return server;
  };
  let pkiDir: string;
  let tlsKey: string;
  let tlsCert: string;

  before(() => {
    // A self-signed certificate for 127.0.0.1, trusted by the client through `ca`.
    pkiDir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-auth-pki-"));
    execFileSync(
      "openssl",
      ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
      { cwd: pkiDir, stdio: ["ignore", "ignore", "pipe"] },
    );
    tlsKey = fs.readFileSync(path.join(pkiDir, "key.pem"), "utf8");
    tlsCert = fs.readFileSync(path.join(pkiDir, "cert.pem"), "utf8");
  });

  after(async () => {
    for (const s of servers) await s.close();
    fs.rmSync(pkiDir, { recursive: true, force: true });
  });

  test("a token realm on plain HTTP at another host:port gets no credentials: the pull is refused before asking it", async () => {
    const realm = await track(startServer((_req, res) => send(res, 200, JSON.stringify({ token: "anonymous-token" }), { "content-type": "application/json" })));
    const registry = await track(startRegistry({ auth: { realm: () => `http://${realm.host}/token`, token: "anonymous-token" } }));
    const ref = parseReference(`${registry.host}/test/image:latest`);

    const withCredentials = new RegistryClient({ credentials: { [registry.host]: { username: USER, password: PASSWORD } } });
    try {
      await assert.rejects(withCredentials.resolve(ref), (err: unknown) => {
        assert.ok(err instanceof ContainerdError, String(err));
        assert.equal(err.code, "registry");
        assert.match(err.message, new RegExp(`registry ${registry.host}: token: refusing to send the credentials of user "bot" to the token realm http://${realm.host.replace(/\./g, "\\.")}`));
        assert.match(err.message, /plain HTTP on a host other than the registry's own/);
        return true;
      });
      assert.equal(realm.requests.length, 0, "the realm was not asked at all");
    } finally {
      await withCredentials.close();
    }

    // Without credentials there is nothing to leak: the anonymous token flow works as before.
    const anonymous = new RegistryClient();
    try {
      assert.equal((await anonymous.resolve(ref)).descriptor.digest, sha256(manifest));
      assert.deepEqual(realm.requests.map((r) => [r.path, r.authorization]), [["/token", undefined]]);
    } finally {
      await anonymous.close();
    }
  });

  test("a token realm on HTTPS at another host:port gets the credentials", async () => {
    const realm = await track(
      startServer((req, res) => (req.headers.authorization === basic(USER, PASSWORD) ? send(res, 200, JSON.stringify({ token: "tls-token" })) : send(res, 401, "{}")), { key: tlsKey, cert: tlsCert }),
    );
    const registry = await track(startRegistry({ auth: { realm: () => `https://${realm.host}/token`, token: "tls-token" } }));
    const client = new RegistryClient({ ca: [tlsCert], credentials: { [registry.host]: { username: USER, password: PASSWORD } } });
    try {
      assert.equal((await client.resolve(parseReference(`${registry.host}/test/image:latest`))).descriptor.digest, sha256(manifest));
      assert.deepEqual(realm.requests.map((r) => r.authorization), [basic(USER, PASSWORD)]);
    } finally {
      await client.close();
    }
  });

  test("a blob redirect to another host:port carries no Authorization header (Basic and Bearer)", async () => {
    const storage = await track(startStorage());
    for (const auth of [{ basic: true } as const, { realm: (self: string) => `http://${self}/token`, token: "blob-token" }]) {
      const registry = await track(startRegistry({ auth, blobAt: () => `http://${storage.host}/storage/${configDesc.digest}?signature=abc` }));
      const client = new RegistryClient({ credentials: { [registry.host]: { username: USER, password: PASSWORD } } });
      const seenBefore = storage.requests.length;
      try {
        const blob = await client.fetchSmallBlob(parseReference(`${registry.host}/test/image:latest`), configDesc);
        assert.equal(sha256(blob), configDesc.digest);
      } finally {
        await client.close();
      }
      const blobRequests = registry.requests.filter((r) => r.path.includes("/blobs/"));
      assert.equal(blobRequests.at(-1)?.authorization, "token" in auth ? "Bearer blob-token" : basic(USER, PASSWORD), "the registry itself got the header");
      assert.deepEqual(storage.requests.slice(seenBefore), [{ method: "GET", path: `/storage/${configDesc.digest}`, authorization: undefined }], "storage got none");
    }
  });

  test("a redirect within the registry's own host:port keeps the Authorization header", async () => {
    const registry = await track(startRegistry({ auth: { basic: true }, blobAt: (self) => `http://${self}/internal/blobs/${configDesc.digest}` }));
    const client = new RegistryClient({ credentials: { [registry.host]: { username: USER, password: PASSWORD } } });
    try {
      const blob = await client.fetchSmallBlob(parseReference(`${registry.host}/test/image:latest`), configDesc);
      assert.equal(sha256(blob), configDesc.digest);
    } finally {
      await client.close();
    }
    assert.equal(registry.requests.find((r) => r.path.startsWith("/internal/"))?.authorization, basic(USER, PASSWORD));
  });

  test("an insecure registry's own host over plain HTTP still gets credentials: Basic, and a token realm on itself", async () => {
    for (const auth of [{ basic: true } as const, { realm: (self: string) => `http://${self}/token`, token: "own-token" }]) {
      const registry = await track(startRegistry({ auth }));
      const client = new RegistryClient({ credentials: { [registry.host]: { username: USER, password: PASSWORD } } });
      try {
        const ref = parseReference(`${registry.host}/test/image:latest`);
        assert.equal((await client.resolve(ref)).descriptor.digest, sha256(manifest));
        assert.equal(client.schemeOf(registry.host), "http");
        assert.equal(sha256(await client.fetchSmallBlob(ref, configDesc)), configDesc.digest);
      } finally {
        await client.close();
      }
      if ("token" in auth) {
        assert.deepEqual(registry.requests.filter((r) => r.path === "/token").map((r) => r.authorization), [basic(USER, PASSWORD)], "one token request, with the credentials");
      } else {
        assert.ok(registry.requests.some((r) => r.authorization === basic(USER, PASSWORD)));
      }
    }
  });
});
