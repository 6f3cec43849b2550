// End to end through our own containerd client only: pull the glibc test image
// from a local registry, create a workspace container from it with the runtime
// bundle and the socket dir mounted, reach the agent, then stop and delete
// leaving no task, container or active snapshot behind.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { BridgeClient } from "../../host/bridge/client.js";
import { ContainerdClient } from "../../host/containerd/client.js";
import { pullImage } from "../../host/containerd/pull.js";
import { bindMount, withMounts, withProcessArgs } from "../../host/containerd/spec.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { buildTestImages } from "./env/images.js";
import { startRegistry, type RegistryEnv } from "./env/registry.js";
import { DEFAULT_AGENT_ARGS, DEFAULT_RUNTIME_DIR, requireRuntimeBundle, waitForSocket } from "./env/container.js";

let env: ContainerdEnv;
let registry: RegistryEnv;
let client: ContainerdClient;

before(async () => {
  requireRuntimeBundle();
  [env, registry] = await Promise.all([startContainerd(), startRegistry()]);
  client = new ContainerdClient({ address: env.address, namespace: env.namespace, runcOptions: { root: env.runcRoot } });
  await client.ready();
});

after(async () => {
  client?.close();
  await Promise.all([env?.stop(), registry?.stop()]);
});

test("a container from a pulled image runs the bridge agent; stop and delete leave nothing", async () => {
  const images = await buildTestImages();
  const ref = await registry.push(images.glibc.image, "memoh/workspace-glibc", "v1");
  const progress = new Set<string>();
  const pulled = await pullImage(client.conn, ref, { onProgress: (digest) => progress.add(digest) });
  assert.ok(progress.size >= 1, "no progress reported");

  const id = `pulled-${randomBytes(3).toString("hex")}`;
  const socketDir = path.join(env.dir, "sockets", id);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o750 });
  const before = await client.snapshots.list();
  await client.createContainerFromImage({
    id,
    image: pulled.name,
    labels: { "memoh.bot_id": id },
    specOpts: [
      withProcessArgs(...DEFAULT_AGENT_ARGS),
      withMounts([bindMount(DEFAULT_RUNTIME_DIR, "/opt/memoh", ["rbind", "ro"]), bindMount(socketDir, "/run/memoh", ["rbind", "rw"])]),
    ],
  });
  const bridge = new BridgeClient(`unix:${path.join(socketDir, "bridge.sock")}`);
  try {
    await client.startContainer(id, { logPath: path.join(env.dir, "logs", `${id}.log`) });
    await waitForSocket(path.join(socketDir, "bridge.sock"), 15_000);
    const info = await bridge.info();
    assert.equal(info.listen, "unix:/run/memoh/bridge.sock");
    const res = await bridge.exec({ command: "echo from $(uname -s) on bash $BASH_VERSION" });
    assert.equal(res.code, 0);
    assert.match(res.stdout.toString(), /^from Linux on bash \d/);
  } finally {
    bridge.close();
    await client.removeContainer(id, { graceMs: 3000 });
  }
  assert.deepEqual((await client.tasks.list()).map((t) => t.id), []);
  assert.deepEqual((await client.containers.list()).map((c) => c.id), []);
  const after = await client.snapshots.list();
  assert.deepEqual(
    after.map((s) => s.name).sort(),
    before.map((s) => s.name).sort(),
    "the container's active snapshot was not removed",
  );
});
