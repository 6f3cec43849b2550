// Pulling over HTTPS from a private registry signed by a throwaway CA: Debian's
// docker-registry serving TLS only on 127.0.0.1 with a certificate made here by
// the openssl CLI, a private containerd. With the CA given (RegistryOptions.ca, what
// MEMOH_REGISTRY_CA feeds) the pull goes over HTTPS; without it the error names the
// host, the certificate problem and MEMOH_REGISTRY_CA, and nothing is left behind.
// Needs root and openssl: `node --import tsx --test test/integration/containerd-pull-tls.test.ts`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { request } from "undici";
import { Leases } from "../../proto/gen/containerd/services/leases/v1/leases_pb.js";
import { loadConfig } from "../../host/config.js";
import { ContainerdConnection } from "../../host/containerd/connection.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { getImage, removeImage } from "../../host/containerd/images.js";
import { pullImage } from "../../host/containerd/pull.js";
import { RegistryClient } from "../../host/containerd/registry.js";
import { snapshotExists } from "../../host/containerd/unpack.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { buildTestImages, type TestImage, type TestImageName } from "./env/images.js";
import { startRegistry, type RegistryEnv } from "./env/registry.js";

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === "ENOENT") throw new Error("openssl is not installed: this test makes its certificates with the openssl CLI (scripts/setup.sh installs it)");
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() ?? e.message}`);
  }
}

interface TestPki {
  dir: string;
  caFile: string;
  caPem: string;
  certificate: string;
  key: string;
}

/** A throwaway CA and a server certificate it signs for IP:127.0.0.1 and DNS:localhost. */
function makePki(dir: string): TestPki {
  const days = ["-days", "2"];
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", ...days, "-subj", "/CN=memoh test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], dir);
  fs.writeFileSync(
    path.join(dir, "server.ext"),
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
  );
  openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", ...days, "-extfile", "server.ext"], dir);
  const caFile = path.join(dir, "ca.pem");
  return { dir, caFile, caPem: fs.readFileSync(caFile, "utf8"), certificate: path.join(dir, "server.pem"), key: path.join(dir, "server.key") };
}

async function leaseIds(conn: ContainerdConnection): Promise<string[]> {
  return (await conn.unary(Leases.method.list, { filters: [] })).leases.map((l) => l.id).sort();
}

describe("containerd pull over TLS", { timeout: 120_000 }, () => {
  let pki: TestPki;
  let env: ContainerdEnv;
  let conn: ContainerdConnection;
  let registry: RegistryEnv;
  let busybox: TestImage;
  let ref: string;

  before(async () => {
    pki = makePki(fs.mkdtempSync(path.join(process.env.MEMOH_TEST_TMPDIR ?? os.tmpdir(), "memoh-pki-")));
    let images: Record<TestImageName, TestImage>;
    [env, registry, images] = await Promise.all([
      startContainerd(),
      startRegistry({ tls: { certificate: pki.certificate, key: pki.key, ca: pki.caPem } }),
      buildTestImages(),
    ]);
    busybox = images.busybox;
    conn = new ContainerdConnection({ address: env.address, namespace: env.namespace });
    await conn.ready();
    ref = await registry.push(busybox.image, "memoh/busybox-tls", "v1");
  });

  after(async () => {
    conn?.close();
    await registry?.stop();
    await env?.stop();
    if (pki) fs.rmSync(pki.dir, { recursive: true, force: true });
  });

  test("the test registry serves TLS only: plain HTTP to its port is refused", async () => {
    assert.equal(registry.url, `https://${registry.host}`);
    const res = await request(`http://${registry.host}/v2/`, { headersTimeout: 5_000 });
    const body = await res.body.text();
    assert.equal(res.statusCode, 400, body);
    assert.match(body, /HTTP request to an HTTPS server/);
  });

  test("with the CA: the pull succeeds over HTTPS and the client keeps https for the host", async () => {
    const client = new RegistryClient({ ca: [pki.caPem] });
    try {
      assert.equal(client.schemeOf(registry.host), undefined, "a loopback host is undecided before its first request");
      const result = await pullImage(conn, ref, { registry: client });
      assert.equal(result.pulled, true);
      assert.equal(result.manifestDigest, busybox.image.manifest.digest);
      assert.ok(result.bytesFetched >= busybox.image.layers.reduce((a, l) => a + l.size, 0), "the layers came over this connection");
      assert.equal(client.schemeOf(registry.host), "https");
      assert.equal(client.baseUrl(registry.host), `https://${registry.host}`);
      assert.equal((await getImage(conn, ref))?.target.digest, busybox.image.manifest.digest);
      assert.ok(await snapshotExists(conn, "overlayfs", result.chainId));
    } finally {
      await client.close();
    }
    assert.deepEqual(await leaseIds(conn), []);
    assert.equal(await removeImage(conn, ref), true);
  });

  test("the CA as MEMOH_REGISTRY_CA names it: loadConfig accepts the file and its text makes the pull work", async () => {
    const cfg = loadConfig({ argv: [], env: { MEMOH_REGISTRY_CA: pki.caFile }, cwd: pki.dir });
    assert.equal(cfg.registryCa, pki.caFile);
    // What host/workspace/main.ts hands the manager's pulls.
    const result = await pullImage(conn, ref, { registry: { ca: [fs.readFileSync(cfg.registryCa!, "utf8")] }, policy: "always" });
    assert.equal(result.manifestDigest, busybox.image.manifest.digest);
    assert.equal(await removeImage(conn, ref), true);
  });

  test("without the CA: a clear error naming the host, the certificate problem and MEMOH_REGISTRY_CA; nothing left", async () => {
    const client = new RegistryClient();
    try {
      const t0 = Date.now();
      const err = await pullImage(conn, ref, { registry: client, policy: "always" }).then(
        () => assert.fail("a pull without the CA must fail"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ContainerdError, String(err));
      assert.equal(err.code, "registry", err.message);
      assert.ok(err.message.includes(`https://${registry.host}`), err.message);
      assert.match(err.message, /TLS certificate of .* is not trusted/);
      assert.match(err.message, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY/);
      assert.match(err.message, /plain HTTP is refused \(HTTP 400/, "the loopback fallback to HTTP was tried and reported");
      assert.match(err.message, /MEMOH_REGISTRY_CA/);
      assert.ok(Date.now() - t0 < 10_000, "fails quickly");
      assert.equal(client.schemeOf(registry.host), undefined, "no scheme is remembered after a failure");
    } finally {
      await client.close();
    }
    assert.equal(await getImage(conn, ref), undefined);
    assert.deepEqual(await leaseIds(conn), []);
  });

  test("a different CA is no better than none", async () => {
    const otherDir = fs.mkdtempSync(path.join(pki.dir, "other-"));
    const other = makePki(otherDir);
    await assert.rejects(pullImage(conn, ref, { registry: { ca: [other.caPem] }, policy: "always" }), (err: unknown) => {
      assert.ok(err instanceof ContainerdError && err.code === "registry", String(err));
      assert.match(err.message, /not trusted/);
      return true;
    });
  });
});
