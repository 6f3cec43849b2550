// Image reference normalisation, WWW-Authenticate parsing, manifest validation,
// platform selection and Docker config credentials: no daemons.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { ContainerdError } from "../../host/containerd/errors.js";
import { normalizeReference, parseReference } from "../../host/containerd/reference.js";
import { chainIds, parseManifest, selectPlatform } from "../../host/containerd/oci.js";
import { loadDockerConfig, parseWwwAuthenticate } from "../../host/containerd/registry-auth.js";

const D = `sha256:${"a".repeat(64)}`;
const D2 = `sha256:${"b".repeat(64)}`;

describe("image references", () => {
  test("normalises Docker Hub short names", () => {
    assert.equal(normalizeReference("debian"), "docker.io/library/debian:latest");
    assert.equal(normalizeReference("debian:12"), "docker.io/library/debian:12");
    assert.equal(normalizeReference("user/app"), "docker.io/user/app:latest");
    assert.equal(normalizeReference("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
  });

  test("keeps registries with ports, nested paths, digests", () => {
    assert.deepEqual(parseReference("host:5000/a/b:tag"), { domain: "host:5000", path: "a/b", tag: "tag" });
    assert.equal(normalizeReference("localhost/x"), "localhost/x:latest");
    assert.equal(normalizeReference(`127.0.0.1:5000/a@${D}`), `127.0.0.1:5000/a@${D}`);
    assert.equal(normalizeReference(`ghcr.io/o/r:v1@${D}`), `ghcr.io/o/r:v1@${D}`);
  });

  test("rejects invalid references with the reason", () => {
    const cases: Array<[string, RegExp]> = [
      ["", /empty/],
      ["Debian", /lowercase/],
      ["a/b:bad tag", /tag/],
      ["a@sha256:123", /digest/],
      ["host:99999/a", /registry host/],
      ["a//b", /repository component ""/],
      [":tag", /no repository/],
    ];
    for (const [ref, why] of cases) {
      assert.throws(() => parseReference(ref), (err: unknown) => err instanceof ContainerdError && err.code === "invalid_argument" && why.test(err.message), ref);
    }
  });
});

describe("registry responses", () => {
  test("parses Bearer and Basic challenges", () => {
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'), [
      {
        scheme: "bearer",
        params: { realm: "https://auth.example/token", service: "registry.example", scope: "repository:a/b:pull" },
      },
    ]);
    assert.equal(parseWwwAuthenticate('Basic realm="x"')[0]?.scheme, "basic");
  });

  test("validates manifests: shape, media types, digests, sizes", () => {
    const good = { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: D, size: 10 }, layers: [{ mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", digest: D2, size: 5 }] };
    const m = parseManifest(Buffer.from(JSON.stringify(good)), undefined);
    assert.equal(m.kind, "manifest");
    const bad = (v: unknown) => () => parseManifest(Buffer.from(JSON.stringify(v)), undefined);
    assert.throws(bad({ ...good, schemaVersion: 1 }), /schemaVersion/);
    assert.throws(bad({ ...good, layers: [{ mediaType: "text/html", digest: D2, size: 5 }] }), /unsupported media type/);
    assert.throws(bad({ ...good, config: { ...good.config, digest: "sha256:xyz" } }), /digest/);
    assert.throws(bad({ ...good, config: { ...good.config, size: -1 } }), /size/);
    assert.throws(() => parseManifest(Buffer.from("<html>"), undefined), /not JSON/);
  });

  test("picks linux/amd64 from a manifest list", () => {
    const list = {
      schemaVersion: 2,
      mediaType: "application/vnd.docker.distribution.manifest.list.v2+json",
      manifests: [
        { mediaType: "application/vnd.docker.distribution.manifest.v2+json", digest: D, size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
        { mediaType: "application/vnd.docker.distribution.manifest.v2+json", digest: D2, size: 1, platform: { os: "linux", architecture: "amd64" } },
      ],
    };
    const idx = parseManifest(Buffer.from(JSON.stringify(list)), undefined);
    assert.equal(idx.kind, "index");
    if (idx.kind === "index") {
      assert.equal(selectPlatform(idx, { os: "linux", architecture: "amd64" })?.digest, D2);
      assert.equal(selectPlatform(idx, { os: "windows", architecture: "amd64" }), undefined);
    }
  });

  test("reads credentials from a Docker config.json", () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "memoh-auth-")), "config.json");
    try {
      fs.writeFileSync(file, JSON.stringify({ auths: { "https://index.docker.io/v1/": { auth: Buffer.from("u:p:x").toString("base64") }, "127.0.0.1:5000": { username: "a", password: "b" } } }));
      assert.deepEqual(loadDockerConfig(file), { "docker.io": { username: "u", password: "p:x" }, "127.0.0.1:5000": { username: "a", password: "b" } });
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });

  test("chainIDs follow the OCI definition", () => {
    const [a, b] = chainIds([D, D2]);
    assert.equal(a, D);
    assert.equal(b, "sha256:" + (sha256hex(`${D} ${D2}`)));
  });
});

function sha256hex(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}
