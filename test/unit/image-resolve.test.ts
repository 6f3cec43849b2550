// One image resolver: which manifest of an index this host runs (variants
// included), and that the same index resolves to the same manifest, config and
// chainID whether its documents come from a registry (what a pull reads) or
// from a content store (what container creation and the if_not_present check read).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import type net from "node:net";
import { after, before, describe, test } from "node:test";
import { ContainerdError } from "../../host/containerd/errors.js";
import { resolveImageFrom, type ImageDocumentReader, type ImageTarget } from "../../host/containerd/images.js";
import { chainIds, hostPlatform, normalizePlatform, parseManifest, selectPlatform, type ImageIndex, type Platform } from "../../host/containerd/oci.js";
import { parseReference } from "../../host/containerd/reference.js";
import { RegistryClient } from "../../host/containerd/registry.js";

const sha256 = (data: Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;
const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const CONFIG = "application/vnd.oci.image.config.v1+json";

interface Doc {
  desc: ImageTarget;
  data: Buffer;
}

function doc(mediaType: string, json: unknown): Doc {
  const data = Buffer.from(JSON.stringify(json));
  return { desc: { mediaType, digest: sha256(data), size: data.length }, data };
}

/** A one-layer image whose config says which platform entry it is (PLATFORM=<label>). */
function image(label: string): { manifest: Doc; config: Doc; diffId: string } {
  const diffId = sha256(Buffer.from(`diff ${label}`));
  const config = doc(CONFIG, { architecture: "amd64", os: "linux", config: { Env: [`PLATFORM=${label}`], Cmd: ["/bin/sh"] }, rootfs: { type: "layers", diff_ids: [diffId] } });
  const layer = { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha256(Buffer.from(`layer ${label}`)), size: 100 };
  return { manifest: doc(MANIFEST, { schemaVersion: 2, mediaType: MANIFEST, config: config.desc, layers: [layer] }), config, diffId };
}

/** An index over images, each entry with its platform (or none). */
function indexOf(entries: Array<{ label: string; platform?: Platform }>) {
  const images = entries.map((e) => ({ ...e, ...image(e.label) }));
  const index = doc(INDEX, { schemaVersion: 2, mediaType: INDEX, manifests: images.map((i) => ({ ...i.manifest.desc, ...(i.platform ? { platform: i.platform } : {}) })) });
  const documents = new Map<string, Buffer>([[index.desc.digest, index.data]]);
  for (const i of images) {
    documents.set(i.manifest.desc.digest, i.manifest.data);
    documents.set(i.config.desc.digest, i.config.data);
  }
  const parsed = parseManifest(index.data, INDEX) as ImageIndex;
  return { index, images, documents, parsed };
}

const labelOf = (idx: ReturnType<typeof indexOf>, digest: string | undefined) => idx.images.find((i) => i.manifest.desc.digest === digest)?.label;

describe("choosing the manifest of an index", () => {
  const linux = (architecture: string, variant?: string): Platform => ({ os: "linux", architecture, ...(variant ? { variant } : {}) });

  test("a plain amd64 host takes the baseline amd64 entry, never amd64/v3, whatever the order", () => {
    const idx = indexOf([
      { label: "amd64-v3", platform: linux("amd64", "v3") },
      { label: "arm64", platform: linux("arm64", "v8") },
      { label: "amd64", platform: linux("amd64") },
      { label: "unknown", platform: { os: "unknown", architecture: "unknown" } },
    ]);
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("amd64"))?.digest), "amd64");
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("amd64", "v3"))?.digest), "amd64-v3", "a v3 host takes its exact variant");
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("arm64"))?.digest), "arm64", "arm64 and arm64/v8 are the same");
    assert.equal(selectPlatform(indexOf([{ label: "v3", platform: linux("amd64", "v3") }]).parsed, linux("amd64")), undefined);
  });

  test("arm: the exact variant, else the nearest lower one; an entry without a platform only last", () => {
    const idx = indexOf([
      { label: "none" },
      { label: "v5", platform: linux("arm", "v5") },
      { label: "v6", platform: linux("arm", "v6") },
      { label: "v8", platform: linux("arm", "v8") },
    ]);
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("arm", "v7"))?.digest), "v6");
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("arm", "v6"))?.digest), "v6");
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, { os: "linux", architecture: "armhf" })?.digest), "v6", "armhf is arm/v7");
    assert.equal(labelOf(idx, selectPlatform(idx.parsed, linux("riscv64"))?.digest), "none");
    assert.equal(selectPlatform(indexOf([{ label: "arm64", platform: linux("arm64") }]).parsed, { os: "windows", architecture: "arm64" }), undefined);
  });

  test("the host platform is linux with GOARCH names", () => {
    const host = hostPlatform();
    assert.equal(host.os, "linux");
    assert.equal(host.architecture, ({ x64: "amd64", arm64: "arm64", arm: "arm" } as Record<string, string>)[process.arch] ?? host.architecture);
    assert.deepEqual(normalizePlatform({ os: "Linux", architecture: "x86_64" }), { os: "linux", architecture: "amd64", variant: "v1" });
    assert.deepEqual(normalizePlatform({ os: "linux", architecture: "aarch64", variant: "8" }), { os: "linux", architecture: "arm64", variant: "v8" });
  });
});

describe("the same index through the registry and through the content store", () => {
  const idx = indexOf([
    { label: "amd64-v3", platform: { os: "linux", architecture: "amd64", variant: "v3" } },
    { label: "arm64", platform: { os: "linux", architecture: "arm64" } },
    { label: "amd64", platform: { os: "linux", architecture: "amd64" } },
    { label: "arm-v6", platform: { os: "linux", architecture: "arm", variant: "v6" } },
  ]);
  let server: http.Server;
  let host: string;

  before(async () => {
    server = http.createServer((req, res) => {
      const m = /^\/v2\/multi\/image\/(manifests|blobs)\/(.+)$/.exec(req.url ?? "");
      const digest = m?.[2] === "latest" ? idx.index.desc.digest : m?.[2];
      const data = digest ? idx.documents.get(digest) : undefined;
      if (!data) {
        res.writeHead(404, { "content-length": "0" });
        return res.end();
      }
      const json = JSON.parse(data.toString("utf8")) as { mediaType?: string };
      res.writeHead(200, { "content-length": String(data.length), "content-type": json.mediaType ?? CONFIG, "docker-content-digest": digest! });
      res.end(req.method === "HEAD" ? undefined : data);
    });
    server.on("clientError", (_err, socket) => socket.destroy());
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

  test("pull and container creation pick the same manifest, config and chainID", async () => {
    const client = new RegistryClient();
    try {
      const ref = parseReference(`${host}/multi/image:latest`);
      // What a pull reads: the tag's top document, then manifests and configs by digest.
      const top = await client.resolve(ref);
      const fromRegistry: ImageDocumentReader = async (desc, kind) =>
        kind === "config" ? client.fetchSmallBlob(ref, desc) : (await client.fetchManifest(ref, desc.digest, desc)).data;
      // What container creation reads: the stored image's target and the content store.
      const fromStore: ImageDocumentReader = async (desc) => {
        const data = idx.documents.get(desc.digest);
        if (!data) throw new ContainerdError("not_found", `content ${desc.digest} not found`);
        return data;
      };
      assert.equal(top.descriptor.digest, idx.index.desc.digest);

      for (const [platform, label] of [
        [{ os: "linux", architecture: "amd64" }, "amd64"],
        [{ os: "linux", architecture: "arm64", variant: "v8" }, "arm64"],
        [{ os: "linux", architecture: "arm", variant: "v7" }, "arm-v6"],
      ] as const) {
        const pulled = await resolveImageFrom(fromRegistry, ref.path, top.descriptor, { platform, invalidCode: "registry" });
        const stored = await resolveImageFrom(fromStore, ref.path, idx.index.desc, { platform });
        assert.deepEqual(stored, pulled, `${platform.architecture}: both paths agree`);
        const expected = idx.images.find((i) => i.label === label)!;
        assert.equal(stored.manifest.digest, expected.manifest.desc.digest, platform.architecture);
        assert.equal(stored.index?.position, idx.images.indexOf(expected));
        assert.equal(stored.chainId, chainIds([expected.diffId]).at(-1));
        assert.deepEqual(stored.imageConfig.Env, [`PLATFORM=${label}`]);
      }

      const missing = { os: "linux", architecture: "s390x" };
      for (const reader of [fromRegistry, fromStore]) {
        await assert.rejects(resolveImageFrom(reader, "multi/image", idx.index.desc, { platform: missing }), (err: unknown) => {
          assert.ok(err instanceof ContainerdError && err.code === "not_found", String(err));
          assert.match(err.message, /has no manifest for linux\/s390x \(it has: linux\/amd64\/v3, linux\/arm64, linux\/amd64, linux\/arm\/v6\)/);
          return true;
        });
      }
    } finally {
      await client.close();
    }
  });

  test("a document whose bytes do not match its descriptor is refused", async () => {
    const amd64 = idx.images.find((i) => i.label === "amd64")!;
    const tampered: ImageDocumentReader = async (desc) => (desc.digest === amd64.config.desc.digest ? Buffer.from(amd64.config.data.toString().replace("PLATFORM", "PLATFORX")) : idx.documents.get(desc.digest)!);
    await assert.rejects(resolveImageFrom(tampered, "multi/image", idx.index.desc, { platform: { os: "linux", architecture: "amd64" } }), (err: unknown) => {
      assert.ok(err instanceof ContainerdError && err.code === "digest_mismatch", String(err));
      assert.match(err.message, new RegExp(`config ${amd64.config.desc.digest} has digest sha256:`));
      return true;
    });
  });
});
