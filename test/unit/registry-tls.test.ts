// Registry transport: what TLS trusts (Node's roots + the system bundle + extra
// CAs), and loopback hosts acting as Docker's insecure registries: HTTPS first,
// plain HTTP once the server shows it does not speak TLS, remembered per host so
// later requests go straight to HTTP; a silent server is a timeout, not a fallback.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import { ContainerdError } from "../../host/containerd/errors.js";
import { parseReference } from "../../host/containerd/reference.js";
import { RegistryClient } from "../../host/containerd/registry.js";
import { SYSTEM_CA_BUNDLE, classifyTlsFailure, parsePemCertificates, systemCaCertificates, trustedCertificates } from "../../host/containerd/registry-tls.js";

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

describe("trusted certificates", () => {
  test("Node's bundled roots, then the system bundle, then the extra CAs", () => {
    const extra = tls.rootCertificates[0]!;
    const all = trustedCertificates([extra]);
    const system = systemCaCertificates();
    assert.deepEqual(all.slice(0, tls.rootCertificates.length), [...tls.rootCertificates]);
    assert.deepEqual(all.slice(tls.rootCertificates.length, tls.rootCertificates.length + system.length), system);
    assert.equal(all[all.length - 1], extra.trim());
    if (fs.existsSync(SYSTEM_CA_BUNDLE)) {
      const inFile = (fs.readFileSync(SYSTEM_CA_BUNDLE, "utf8").match(/BEGIN CERTIFICATE/g) ?? []).length;
      assert.ok(inFile > 0);
      assert.equal(system.length, inFile, "every certificate of the system bundle is trusted");
    }
    assert.equal(systemCaCertificates(), system, "the bundle is read once");
  });

  test("a bundle of several certificates is split; junk is refused, not silently ignored", () => {
    const bundle = `# two roots\n${tls.rootCertificates[0]}\n${tls.rootCertificates[1]}\n`;
    assert.equal(parsePemCertificates(bundle, "bundle").length, 2);
    assert.throws(() => parsePemCertificates("not a certificate", "my CA"), (err: unknown) => {
      assert.ok(err instanceof ContainerdError && err.code === "invalid_argument");
      assert.match(err.message, /my CA: no "-----BEGIN CERTIFICATE-----" block/);
      return true;
    });
    assert.throws(() => new RegistryClient({ ca: ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"] }), /registry CA 1 of 1: certificate 1 is not valid/);
  });

  test("which TLS failures say the server does not speak TLS, or is not trusted", () => {
    const err = (code: string, message = "x") => Object.assign(new Error(message), { code });
    assert.equal(classifyTlsFailure(err("ERR_SSL_WRONG_VERSION_NUMBER", "ssl3_get_record:wrong version number")), "not_tls");
    assert.equal(classifyTlsFailure(err("ERR_SSL_PACKET_LENGTH_TOO_LONG")), "not_tls");
    assert.equal(classifyTlsFailure(err("EPROTO", "packet length too long")), "not_tls");
    assert.equal(classifyTlsFailure(err("ECONNRESET", "Client network socket disconnected before secure TLS connection was established")), "not_tls");
    assert.equal(classifyTlsFailure(err("DEPTH_ZERO_SELF_SIGNED_CERT")), "untrusted_certificate");
    assert.equal(classifyTlsFailure(err("UNABLE_TO_VERIFY_LEAF_SIGNATURE")), "untrusted_certificate");
    assert.equal(classifyTlsFailure(err("ERR_TLS_CERT_ALTNAME_INVALID")), "untrusted_certificate");
    assert.equal(classifyTlsFailure(err("UND_ERR_CONNECT_TIMEOUT", "Connect Timeout Error")), undefined, "a timeout is no reason to fall back");
    assert.equal(classifyTlsFailure(err("ECONNREFUSED")), undefined);
  });

  test("loopback hosts are insecure (may fall back to HTTP), others are HTTPS only", () => {
    const client = new RegistryClient({ insecureHosts: ["registry.lan:5000", "mirror.lan"] });
    for (const host of ["127.0.0.1:5000", "127.1.2.3", "localhost:5000", "[::1]:5000", "registry.lan:5000", "mirror.lan:443"]) {
      assert.equal(client.isInsecure(host), true, host);
      assert.equal(client.schemeOf(host), undefined, host);
    }
    for (const host of ["docker.io", "ghcr.io", "registry.lan:6000", "128.0.0.1:5000"]) {
      assert.equal(client.isInsecure(host), false, host);
      assert.equal(client.schemeOf(host), "https", host);
    }
    assert.equal(client.baseUrl("docker.io"), "https://registry-1.docker.io");
    void client.close();
  });
});

describe("loopback registry over plain HTTP", () => {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
      layers: [],
    }),
  );
  let server: http.Server;
  let host: string;
  /** Bytes that were not HTTP: a TLS client hello each. */
  let tlsHellos = 0;
  let httpRequests = 0;

  before(async () => {
    server = http.createServer((req, res) => {
      httpRequests++;
      if (req.url === "/v2/test/image/manifests/latest") {
        res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json", "content-length": String(manifest.length), "docker-content-digest": sha256(manifest) });
        res.end(req.method === "HEAD" ? undefined : manifest);
      } else {
        res.writeHead(404, { "content-length": "0" });
        res.end();
      }
    });
    server.on("clientError", (_err, socket) => {
      tlsHellos++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });

  after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );

  test("the first request tries TLS once and falls back; later requests go straight to HTTP", async () => {
    const ref = parseReference(`${host}/test/image:latest`);
    const client = new RegistryClient();
    try {
      const [hellos0, requests0] = [tlsHellos, httpRequests];
      assert.equal(client.schemeOf(host), undefined);
      const first = await client.resolve(ref);
      assert.equal(first.descriptor.digest, sha256(manifest));
      assert.equal(tlsHellos - hellos0, 1, "one TLS attempt");
      assert.equal(httpRequests - requests0, 1, "then one HTTP request");
      assert.equal(client.schemeOf(host), "http");
      assert.equal(client.baseUrl(host), `http://${host}`);

      await client.resolve(ref);
      assert.equal(await client.headManifest(ref).then((d) => d?.digest), sha256(manifest));
      assert.equal(tlsHellos - hellos0, 1, "no further TLS attempt");
      assert.equal(httpRequests - requests0, 3);
    } finally {
      await client.close();
    }
    // The choice lives as long as the client: a new one probes again.
    const fresh = new RegistryClient();
    try {
      const hellos = tlsHellos;
      await fresh.resolve(ref);
      assert.equal(tlsHellos - hellos, 1);
    } finally {
      await fresh.close();
    }
  });

  test("a closed port is 'unavailable' at once, with no fallback and nothing remembered", async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, "127.0.0.1", () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(port));
      });
    });
    const client = new RegistryClient();
    try {
      await assert.rejects(client.resolve(parseReference(`127.0.0.1:${closed}/x/y:latest`)), (err: unknown) => {
        assert.ok(err instanceof ContainerdError && err.code === "unavailable", String(err));
        assert.match(err.message, new RegExp(`cannot reach https://127\\.0\\.0\\.1:${closed}: .*ECONNREFUSED`));
        return true;
      });
      assert.equal(client.schemeOf(`127.0.0.1:${closed}`), undefined);
    } finally {
      await client.close();
    }
  });

  test("a server that accepts and never answers times out within the headers timeout; no fallback", async () => {
    const sockets: net.Socket[] = [];
    let connections = 0;
    const silent = net.createServer((sock) => {
      connections++;
      sockets.push(sock);
    });
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const silentHost = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
    const client = new RegistryClient({ headersTimeoutMs: 500 });
    try {
      const t0 = Date.now();
      await assert.rejects(client.resolve(parseReference(`${silentHost}/x/y:latest`)), (err: unknown) => {
        assert.ok(err instanceof ContainerdError && err.code === "unavailable", String(err));
        assert.match(err.message, /cannot reach https:\/\/127\.0\.0\.1:\d+: no answer within 500 ms/);
        return true;
      });
      const elapsed = Date.now() - t0;
      assert.ok(elapsed < 3_000, `took ${elapsed} ms`);
      assert.equal(connections, 1, "no second (plain HTTP) attempt after the timeout");
      assert.equal(client.schemeOf(silentHost), undefined);
    } finally {
      await client.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});
