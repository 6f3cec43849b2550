// Pulling images into a private containerd from a private registry on 127.0.0.1:
// progress, digests, skipping what is stored, Basic auth, a corrupt blob, clear
// errors for bad references / unreachable registries / missing tags, pull
// policies, and importing an OCI layout offline.
// Needs root: `node --import tsx --test test/integration/containerd-pull.test.ts`.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Leases } from "../../proto/gen/containerd/services/leases/v1/leases_pb.js";
import { Snapshots } from "../../proto/gen/containerd/services/snapshots/v1/snapshots_pb.js";
import { ContainerdClient } from "../../host/containerd/client.js";
import { ContainerdConnection } from "../../host/containerd/connection.js";
import { contentInfo, deleteContent, writeBlob, type BlobSource } from "../../host/containerd/content.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { getImage, listImages, removeImage } from "../../host/containerd/images.js";
import { importOciLayout } from "../../host/containerd/import.js";
import { pullImage } from "../../host/containerd/pull.js";
import { RegistryClient } from "../../host/containerd/registry.js";
import { chainIds } from "../../host/containerd/oci.js";
import { snapshotExists } from "../../host/containerd/unpack.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { buildLayer, buildOciImage, buildTestImages, writeOciLayout, type OciImage, type TestImage, type TestImageName } from "./env/images.js";
import { freePort, startFakeRegistry, startRegistry, type RegistryEnv } from "./env/registry.js";

async function snapshotNames(conn: ContainerdConnection): Promise<string[]> {
  const names: string[] = [];
  for await (const res of conn.serverStream(Snapshots.method.list, { snapshotter: "overlayfs", filters: [] })) {
    for (const info of res.info) names.push(info.name);
  }
  return names.sort();
}

async function leaseIds(conn: ContainerdConnection): Promise<string[]> {
  return (await conn.unary(Leases.method.list, { filters: [] })).leases.map((l) => l.id).sort();
}

async function imageNames(conn: ContainerdConnection): Promise<string[]> {
  return (await listImages(conn)).map((i) => i.name).sort();
}

/** Asserts `fn` rejects with a ContainerdError of `code` whose message matches, within `ms`. */
async function rejectsWithin(ms: number, fn: () => Promise<unknown>, code: string, message: RegExp): Promise<ContainerdError> {
  const t0 = Date.now();
  const err = await fn().then(
    () => assert.fail("expected a failure"),
    (e: unknown) => e,
  );
  const elapsed = Date.now() - t0;
  assert.ok(err instanceof ContainerdError, `expected a ContainerdError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
  assert.ok(elapsed < ms, `took ${elapsed} ms (limit ${ms})`);
  return err;
}

describe("containerd pull", { timeout: 120_000 }, () => {
  let env: ContainerdEnv;
  let conn: ContainerdConnection;
  let registry: RegistryEnv;
  let images: Record<TestImageName, TestImage>;
  const refs = {} as Record<TestImageName, string>;

  before(async () => {
    [env, registry, images] = await Promise.all([startContainerd(), startRegistry(), buildTestImages()]);
    conn = new ContainerdConnection({ address: env.address, namespace: env.namespace });
    await conn.ready();
    for (const name of ["busybox", "glibc"] as const) refs[name] = await registry.push(images[name].image, `memoh/${name}`);
  });

  after(async () => {
    conn?.close();
    await registry?.stop();
    await env?.stop();
  });

  test("pulls both test images: progress, digests, image listed, top snapshot exists", async () => {
    for (const name of ["busybox", "glibc"] as const) {
      const image = images[name].image;
      const progress = new Map<string, Array<[number, number]>>();
      const result = await pullImage(conn, refs[name], {
        registry: {},
        onProgress: (digest, offset, total) => {
          const list = progress.get(digest) ?? [];
          list.push([offset, total]);
          progress.set(digest, list);
        },
      });
      assert.equal(result.pulled, true);
      assert.equal(result.name, refs[name]);
      assert.equal(result.manifestDigest, image.manifest.digest);
      assert.equal(result.configDigest, image.config.digest);
      const chain = chainIds(image.diffIds);
      assert.equal(result.chainId, chain[chain.length - 1]);
      for (const layer of image.layers) {
        const events = progress.get(layer.digest);
        assert.ok(events && events.length > 0, `no progress for layer ${layer.digest}`);
        assert.deepEqual(events[events.length - 1], [layer.size, layer.size]);
        for (let i = 1; i < events.length; i++) assert.ok(events[i]![0] >= events[i - 1]![0], "offsets never go back");
        const info = await contentInfo(conn, layer.digest);
        assert.equal(info?.size, layer.size);
        assert.equal(info?.labels["containerd.io/uncompressed"], image.diffIds[image.layers.indexOf(layer)]);
      }
      assert.ok(result.bytesFetched >= image.layers.reduce((a, l) => a + l.size, 0));
      const listed = await getImage(conn, refs[name]);
      assert.equal(listed?.target.digest, image.manifest.digest);
      assert.ok(await snapshotExists(conn, "overlayfs", result.chainId), "top snapshot exists");
      const config = await contentInfo(conn, image.config.digest);
      assert.equal(config?.labels["containerd.io/gc.ref.snapshot.overlayfs"], result.chainId);
      const manifest = await contentInfo(conn, image.manifest.digest);
      assert.equal(manifest?.labels["containerd.io/gc.ref.content.config"], image.config.digest);
      assert.equal(manifest?.labels["containerd.io/gc.ref.content.l.0"], image.layers[0]!.digest);
    }
    assert.deepEqual(await leaseIds(conn), [], "the pull leases are gone");
    assert.deepEqual(await imageNames(conn), [refs.busybox, refs.glibc].sort());
  });

  test("a second pull transfers nothing; 'always' re-resolves but fetches no blob", async () => {
    const client = new RegistryClient();
    try {
      const again = await pullImage(conn, refs.busybox, { registry: client });
      assert.equal(again.pulled, false);
      assert.equal(client.bytesFetched, 0);
      const always = await pullImage(conn, refs.glibc, { registry: client, policy: "always" });
      assert.equal(always.pulled, true);
      assert.equal(always.layersSkipped, images.glibc.image.layers.length);
      assert.equal(always.bytesFetched, 0, "manifest, config and layers come from the content store");
      assert.equal(client.bytesFetched, 0);
    } finally {
      await client.close();
    }
  });

  test("removing an image, then pulling with policy never fails clearly; if_not_present pulls it back", async () => {
    assert.equal(await removeImage(conn, refs.busybox), true);
    assert.equal(await getImage(conn, refs.busybox), undefined);
    await rejectsWithin(5_000, () => pullImage(conn, refs.busybox, { policy: "never" }), "not_found", /not present and the pull policy is "never"/);
    const back = await pullImage(conn, refs.busybox);
    assert.equal(back.pulled, true);
    assert.equal((await getImage(conn, refs.busybox))?.target.digest, images.busybox.image.manifest.digest);
    assert.ok(await snapshotExists(conn, "overlayfs", back.chainId));
  });

  test("an index (manifest list) resolves to linux/amd64; concurrent pulls of one image both succeed", async () => {
    const mk = async (tag: string) => buildOciImage(`x/${tag}`, [await buildLayer([{ path: `${tag}.bin`, type: "file", mode: 0o644, data: randomBytes(256 * 1024) }])]);
    const amd64 = await mk("amd64");
    const arm64 = await mk("arm64");
    const { ref, index } = await registry.pushIndex(
      [
        { image: arm64, platform: { os: "linux", architecture: "arm64" } },
        { image: amd64, platform: { os: "linux", architecture: "amd64" } },
      ],
      "memoh/multi",
      "v1",
    );
    const [a, b] = await Promise.all([pullImage(conn, ref, { registry: {} }), pullImage(conn, ref, { registry: {} })]);
    for (const r of [a, b]) {
      assert.equal(r.manifestDigest, amd64.manifest.digest);
      assert.equal(r.chainId, amd64.diffIds[0]);
    }
    const img = await getImage(conn, ref);
    assert.equal(img?.target.digest, index.digest, "the image record points at the index");
    assert.equal(img?.target.mediaType, "application/vnd.oci.image.index.v1+json");
    assert.equal((await contentInfo(conn, index.digest))?.labels["containerd.io/gc.ref.content.m.1"], amd64.manifest.digest);
    assert.equal(await contentInfo(conn, arm64.layers[0]!.digest), undefined, "the other platform's layer was not fetched");
    assert.equal(await removeImage(conn, ref), true);
  });

  test("a multi-platform index: the pulled manifest is the one a container is created from; if_not_present transfers nothing", async () => {
    // amd64/v3 comes first: a resolver that took the first amd64 entry would start
    // containers from a manifest the pull never unpacked (a plain amd64 host must not
    // run amd64/v3 code anyway).
    const mk = async (label: string) =>
      buildOciImage(`x/${label}`, [await buildLayer([{ path: `${label}.txt`, type: "file", mode: 0o644, data: Buffer.from(`${label} ${randomBytes(8).toString("hex")}\n`) }])], {
        env: [`PATH=/usr/bin:/bin`, `IMAGE_PLATFORM=${label}`],
        cmd: ["/bin/true"],
      });
    const [amd64v3, arm64, amd64] = [await mk("amd64-v3"), await mk("arm64"), await mk("amd64")];
    const { ref } = await registry.pushIndex(
      [
        { image: amd64v3, platform: { os: "linux", architecture: "amd64", variant: "v3" } },
        { image: arm64, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
        { image: amd64, platform: { os: "linux", architecture: "amd64" } },
      ],
      "memoh/multi-variant",
      "v1",
    );
    const pulled = await pullImage(conn, ref, { registry: {} });
    assert.equal(pulled.pulled, true);
    assert.equal(pulled.manifestDigest, amd64.manifest.digest, "the pull took the baseline amd64 manifest");
    assert.equal(pulled.chainId, amd64.diffIds[0]);
    for (const other of [amd64v3, arm64]) assert.equal(await contentInfo(conn, other.layers[0]!.digest), undefined, "other platforms' layers were not fetched");

    const client = new ContainerdClient({ address: env.address, namespace: env.namespace });
    const id = `multi-${randomBytes(3).toString("hex")}`;
    try {
      const rootfs = await client.imageRootfs(ref);
      assert.equal(rootfs.manifestDigest, pulled.manifestDigest);
      assert.equal(rootfs.chainId, pulled.chainId);
      await client.createContainerFromImage({ id, image: ref });
      const container = await client.containers.get(id);
      assert.ok(container.spec?.process.env.includes("IMAGE_PLATFORM=amd64"), `env: ${container.spec?.process.env.join(" ")}`);
      assert.deepEqual(container.spec?.process.args, ["/bin/true"]);
      assert.equal((await client.snapshots.stat(container.snapshotKey)).parent, pulled.chainId, "the container's rootfs sits on the pulled layers");
    } finally {
      await client.containers.delete(id, { removeSnapshot: true, ignoreNotFound: true });
      client.close();
    }

    const again = new RegistryClient();
    try {
      const second = await pullImage(conn, ref, { registry: again });
      assert.equal(second.pulled, false, "if_not_present recognises the stored index");
      assert.equal(second.manifestDigest, amd64.manifest.digest);
      assert.equal(again.bytesFetched, 0, "no second transfer");
    } finally {
      await again.close();
    }
    assert.equal(await removeImage(conn, ref), true);
  });

  test("Basic auth: pulls with credentials, fails clearly without or with wrong ones", async () => {
    const secured = await startRegistry({ auth: { username: "memoh", password: "s3cret" } });
    try {
      const ref = await secured.push(images.busybox.image, "private/busybox", "v1");
      await rejectsWithin(15_000, () => pullImage(conn, ref, { registry: {} }), "permission_denied", /requires authentication.*no credentials/);
      await rejectsWithin(
        15_000,
        () => pullImage(conn, ref, { registry: { credentials: { [secured.host]: { username: "memoh", password: "wrong" } } } }),
        "permission_denied",
        /rejected the credentials of user "memoh"/,
      );
      // Credentials as a Docker config.json carries them.
      const authFile = path.join(secured.dir, "config.json");
      fs.writeFileSync(authFile, JSON.stringify({ auths: { [secured.host]: { auth: Buffer.from("memoh:s3cret").toString("base64") } } }));
      const { loadDockerConfig } = await import("../../host/containerd/registry-auth.js");
      const result = await pullImage(conn, ref, { registry: { credentials: loadDockerConfig(authFile) } });
      assert.equal(result.pulled, true);
      assert.equal((await getImage(conn, ref))?.target.digest, images.busybox.image.manifest.digest);
      await removeImage(conn, ref);
    } finally {
      await secured.stop();
    }
  });

  test("Bearer-token auth: token fetched from the realm with Basic credentials; refused without", async () => {
    const layer = await buildLayer([{ path: "token.txt", type: "file", mode: 0o644, data: randomBytes(1024) }]);
    const image = buildOciImage("fake/image:latest", [layer]);
    const fake = await startFakeRegistry(image, { bearer: { username: "bot", password: "pw" } });
    try {
      await rejectsWithin(15_000, () => pullImage(conn, fake.ref, { registry: {} }), "permission_denied", /refused a token \(401\) without credentials/);
      const result = await pullImage(conn, fake.ref, { registry: { credentials: { [fake.host]: { username: "bot", password: "pw" } } } });
      assert.equal(result.manifestDigest, image.manifest.digest);
      assert.ok(fake.requests.filter((p) => p === "/token").length >= 2, "the token endpoint was asked");
      assert.ok(await removeImage(conn, fake.ref));
    } finally {
      await fake.stop();
    }
  });

  test("a blob with the wrong content: clear digest error, no image, lease or snapshot left", async () => {
    // Two fresh layers: the first unpacks fine, the second is served corrupt.
    const mk = async (n: number) =>
      buildLayer([{ path: `file-${n}`, type: "file", mode: 0o644, data: randomBytes(64 * 1024) }]);
    const image: OciImage = buildOciImage("evil/image:latest", [await mk(1), await mk(2)]);
    const corrupt = image.layers[1]!;
    const evil = await startFakeRegistry(image, { corruptDigest: corrupt.digest });
    try {
      const before = { snapshots: await snapshotNames(conn), leases: await leaseIds(conn), images: await imageNames(conn) };
      const err = await rejectsWithin(15_000, () => pullImage(conn, evil.ref, { registry: {}, concurrency: 1 }), "digest_mismatch", new RegExp(corrupt.digest));
      assert.match(err.message, /content has digest sha256:[a-f0-9]{64}, expected/);
      // GC may still be collecting what earlier tests removed: nothing may be *added*.
      const added = (await snapshotNames(conn)).filter((n) => !before.snapshots.includes(n));
      assert.deepEqual(added, [], "no partial snapshot");
      assert.equal(await snapshotExists(conn, "overlayfs", image.diffIds[0]!), false, "the good first layer's snapshot was removed again");
      assert.deepEqual(await leaseIds(conn), before.leases, "no lease");
      assert.deepEqual(await imageNames(conn), before.images, "no image");
      assert.equal(await contentInfo(conn, corrupt.digest), undefined, "the corrupt blob was not committed");
      assert.equal(await contentInfo(conn, image.layers[0]!.digest), undefined, "this pull's blobs were removed");
    } finally {
      await evil.stop();
    }
  });

  test("invalid reference, unreachable registry, missing tag: clear errors, quickly", async () => {
    await rejectsWithin(1_000, () => pullImage(conn, "Not A Ref!"), "invalid_argument", /invalid image reference/);
    await rejectsWithin(1_000, () => pullImage(conn, "127.0.0.1:5000/x:bad tag"), "invalid_argument", /invalid image reference/);
    const closed = await freePort();
    await rejectsWithin(15_000, () => pullImage(conn, `127.0.0.1:${closed}/memoh/none:latest`, { registry: {} }), "unavailable", new RegExp(`cannot reach https://127.0.0.1:${closed}`));
    await rejectsWithin(15_000, () => pullImage(conn, `${registry.host}/memoh/busybox:no-such-tag`, { registry: {} }), "not_found", /has no tag "no-such-tag"/);
    // A registry that accepts the connection and never answers: the headers timeout ends it.
    const silentSockets: net.Socket[] = [];
    const silent = net.createServer((sock) => silentSockets.push(sock));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const silentPort = (silent.address() as net.AddressInfo).port;
    try {
      await rejectsWithin(5_000, () => pullImage(conn, `127.0.0.1:${silentPort}/memoh/none:latest`, { registry: { headersTimeoutMs: 1_000 } }), "unavailable", /no answer within 1000 ms/);
    } finally {
      await new Promise<void>((resolve) => {
        silent.close(() => resolve());
        for (const s of silentSockets) s.destroy();
      });
    }
    assert.deepEqual(await leaseIds(conn), [], "failed pulls leave no lease");
  });

  test("Content.Write resumes an interrupted ingest from its offset; containerd checks the digest", async () => {
    const data = randomBytes(3 * 1024 * 1024 + 123);
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    const half = 2 * 1024 * 1024;
    const interrupted: BlobSource = async () => ({
      from: 0,
      chunks: (async function* () {
        yield data.subarray(0, half);
        await sleep(300); // containerd has the first bytes before the "network" drops
        throw new Error("network dropped");
      })(),
    });
    const rest = (bytes: Buffer, asked: number[]): BlobSource => async (offset) => {
      asked.push(offset);
      return { from: offset, chunks: (async function* () { yield bytes.subarray(offset); })() };
    };
    await assert.rejects(writeBlob(conn, interrupted, { ref: "resume-a", digest, size: data.length }), /network dropped/);
    const asked: number[] = [];
    const res = await writeBlob(conn, rest(data, asked), { ref: "resume-a", digest, size: data.length });
    assert.deepEqual(asked, [half]);
    assert.equal(res.resumedFrom, half);
    assert.equal(res.written, data.length - half);
    assert.equal((await contentInfo(conn, digest))?.size, data.length);
    // A resumed write whose remainder is wrong cannot be hashed here; containerd's commit check catches it.
    const other = randomBytes(data.length);
    const otherDigest = `sha256:${createHash("sha256").update(other).digest("hex")}`;
    await assert.rejects(writeBlob(conn, interrupted, { ref: "resume-b", digest: otherDigest, size: other.length }), /network dropped/);
    await rejectsWithin(10_000, () => writeBlob(conn, rest(other, []), { ref: "resume-b", digest: otherDigest, size: other.length, name: "blob resume-b" }), "digest_mismatch", /blob resume-b/);
    assert.equal(await contentInfo(conn, otherDigest), undefined);
    assert.equal(await deleteContent(conn, digest), true);
  });

  test("imports an OCI layout tarball without a registry", async () => {
    const tarPath = path.join(env.dir, "layout.tar");
    const ref = `memoh.test/imported-${randomBytes(3).toString("hex")}:v1`;
    const layer = await buildLayer([{ path: "hello.txt", type: "file", mode: 0o644, data: Buffer.from("offline\n") }]);
    const image = buildOciImage(ref, [layer]);
    await writeOciLayout([image], tarPath);
    const [imported] = await importOciLayout(conn, tarPath);
    assert.equal(imported?.image.name, ref);
    assert.equal(imported?.image.target.digest, image.manifest.digest);
    assert.equal(imported?.chainId, image.diffIds[0]);
    assert.ok(await snapshotExists(conn, "overlayfs", image.diffIds[0]!));
    assert.equal((await contentInfo(conn, image.config.digest))?.labels["containerd.io/gc.ref.snapshot.overlayfs"], image.diffIds[0]);
    // The imported image satisfies "never": it is present and unpacked.
    const never = await pullImage(conn, ref, { policy: "never" });
    assert.equal(never.pulled, false);
    assert.deepEqual(await leaseIds(conn), []);
  });
});
