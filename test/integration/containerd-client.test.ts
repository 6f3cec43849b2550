// The TypeScript containerd client against a private containerd: a workspace
// container with the runtime bundle whose agent answers, exit events, logs,
// snapshot commit surviving GC, read-only host mounts, a daemon that is gone or
// hung, and a task that cannot die.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { BridgeClient } from "../../host/bridge/client.js";
import { ContainerdClient } from "../../host/containerd/client.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { cgroupDir, detectCgroupVersion } from "../../host/containerd/cgroups.js";
import { nextExit } from "../../host/containerd/events.js";
import { ensureNamespace } from "../../host/containerd/namespaces.js";
import { GC_ROOT_LABEL, isMountPoint, mountReadOnly, unmount } from "../../host/containerd/snapshots.js";
import { bindMount, withEnv, withMounts, withProcessArgs } from "../../host/containerd/spec.js";
import { setTimeout as sleep } from "node:timers/promises";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { fromBinary } from "@bufbuild/protobuf";
import { ContainerDeleteSchema } from "../../proto/gen/containerd/events/container_pb.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { waitFor } from "./env/workspace.js";
import { buildTestImages, importTestImages } from "./env/images.js";
import { DEFAULT_AGENT_ARGS, DEFAULT_RUNTIME_DIR, requireRuntimeBundle, waitForSocket } from "./env/container.js";

let env: ContainerdEnv;
let client: ContainerdClient;
let busybox: string;
const uid = () => randomBytes(3).toString("hex");

before(async () => {
  requireRuntimeBundle();
  env = await startContainerd();
  busybox = (await importTestImages(env, await buildTestImages())).busybox;
  client = new ContainerdClient({ address: env.address, namespace: env.namespace, runcOptions: { root: env.runcRoot } });
  await client.ready();
});

after(async () => {
  client?.close();
  await env?.stop();
});

/** Everything our client can see in the namespace that is not part of an imported image. */
async function leftovers(): Promise<{ tasks: string[]; containers: string[]; activeSnapshots: string[] }> {
  const tasks = (await client.tasks.list()).map((t) => t.id);
  const containers = (await client.containers.list()).map((c) => c.id);
  const activeSnapshots = (await client.snapshots.list()).filter((s) => s.kind !== "committed").map((s) => s.name);
  return { tasks, containers, activeSnapshots };
}

test("daemon version, namespace, and the imported image's top chainID is a committed snapshot", async () => {
  const v = await client.version();
  assert.match(v.version, /^1\.\d+/);
  await client.ensureNamespace();
  await client.ensureNamespace(); // idempotent
  assert.ok((await client.listNamespaces()).includes(env.namespace));
  const rootfs = await client.imageRootfs(busybox);
  assert.match(rootfs.chainId, /^sha256:[0-9a-f]{64}$/);
  const info = await client.snapshots.stat(rootfs.chainId);
  assert.equal(info.kind, "committed");
  const usage = await client.snapshots.usage(rootfs.chainId);
  assert.ok(usage.size > 0n, `usage ${usage.size}`);

  // A view of a single-layer image is a read-only bind mount on the host.
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-view-mnt-"));
  const viewKey = `view-${uid()}`;
  try {
    await mountReadOnly(await client.snapshots.view(viewKey, rootfs.chainId, { labels: { [GC_ROOT_LABEL]: "test" } }), mnt);
    assert.ok(fs.statSync(path.join(mnt, "bin/busybox")).isFile());
    assert.throws(() => fs.writeFileSync(path.join(mnt, "x"), "x"), /EROFS/);
  } finally {
    await unmount(mnt);
    fs.rmSync(mnt, { recursive: true, force: true });
    await client.snapshots.remove(viewKey, { ignoreNotFound: true });
  }
  assert.equal(await client.snapshots.exists(viewKey), false);
});

test("update points a container at another snapshot; delete removes that one", async () => {
  const id = `upd-${uid()}`;
  const chainId = (await client.imageRootfs(busybox)).chainId;
  try {
    await client.createContainerFromImage({ id, image: busybox, specOpts: [withProcessArgs("true")] });
    // A GC root until the container refers to it: containerd's GC runs whenever a lease goes.
    await client.snapshots.prepare(`${id}-next`, chainId, { labels: { [GC_ROOT_LABEL]: "test" } });
    const updated = await client.containers.update(id, { snapshotKey: `${id}-next` });
    assert.equal(updated.snapshotKey, `${id}-next`);
    assert.equal(updated.image, busybox, "fields outside the mask must not change");
    // No longer referenced, the old snapshot may already have been collected.
    await client.snapshots.remove(id, { ignoreNotFound: true });
    await client.containers.delete(id, { removeSnapshot: true });
    assert.equal(await client.snapshots.exists(`${id}-next`), false);
    await assert.rejects(client.containers.get(id), (err) => err instanceof ContainerdError && err.code === "not_found");
  } finally {
    await client.containers.delete(id, { removeSnapshot: true, ignoreNotFound: true }).catch(() => {});
    for (const s of [id, `${id}-next`]) await client.snapshots.remove(s, { ignoreNotFound: true }).catch(() => {});
  }
});

describe("a workspace container with the runtime bundle", () => {
  const id = `ws-${uid()}`;
  let socketDir: string;

  before(() => {
    socketDir = path.join(env.dir, "sockets", id);
    fs.mkdirSync(socketDir, { recursive: true });
  });

  after(async () => {
    await client.removeContainer(id, { graceMs: 1000 }).catch(() => {});
  });

  test("the agent answers Info; labels filter; exit event on stop; nothing left behind", async () => {
    await client.createContainerFromImage({
      id,
      image: busybox,
      labels: { "memoh.bot_id": "bot-1" },
      specOpts: [
        withProcessArgs(...DEFAULT_AGENT_ARGS),
        withEnv({ BRIDGE_SOCKET_PATH: "/run/memoh/bridge.sock" }),
        withMounts([bindMount(DEFAULT_RUNTIME_DIR, "/opt/memoh", ["rbind", "ro"]), bindMount(socketDir, "/run/memoh", ["rbind", "rw"])]),
      ],
    });
    assert.deepEqual((await client.containers.listByLabel("memoh.bot_id", "bot-1")).map((c) => c.id), [id]);
    assert.deepEqual(await client.containers.listByLabel("memoh.bot_id", "bot-2"), []);
    const updated = await client.containers.update(id, { labels: { "memoh.version": "3" }, mergeLabels: true });
    assert.deepEqual(updated.labels, { "memoh.bot_id": "bot-1", "memoh.version": "3" });
    const got = await client.containers.get(id);
    assert.equal(got.snapshotKey, id);
    assert.deepEqual(got.spec?.process.args, DEFAULT_AGENT_ARGS);

    const exits = client.subscribeTaskExits();
    try {
      const logPath = path.join(env.dir, "logs", `${id}.log`);
      const pid = await client.startContainer(id, { logPath });
      assert.ok(pid > 0);
      assert.equal((await client.tasks.get(id)).status, "running");
      // The runc options reached the shim: runc keeps this container's state under our root.
      assert.ok(fs.existsSync(path.join(env.runcRoot, env.namespace, id, "state.json")), `no runc state under ${env.runcRoot}`);
      await waitForSocket(path.join(socketDir, "bridge.sock"), 15_000);
      const bridge = new BridgeClient(`unix:${path.join(socketDir, "bridge.sock")}`);
      try {
        const info = await bridge.info();
        assert.equal(info.listen, "unix:/run/memoh/bridge.sock");
        assert.notEqual(info.pid, process.pid);
      } finally {
        bridge.close();
      }
      const metrics = await client.tasks.metrics(id);
      assert.match(metrics.typeUrl, /cgroups\.v[12]\.Metrics$/);
      assert.ok(metrics.value.length > 0);
      // tini and node (and node's threads, which the pids controller counts).
      assert.ok((metrics.usage?.pids?.current ?? 0) >= 2, `pids ${JSON.stringify(metrics.usage)}`);
      assert.ok((metrics.usage?.memory?.usage ?? 0) > 1024 * 1024, `memory ${JSON.stringify(metrics.usage)}`);
      assert.ok((metrics.usage?.cpu?.usageNs ?? 0) > 0, `cpu ${JSON.stringify(metrics.usage)}`);
      if (metrics.usage?.cgroup === "v1") {
        const pidsFile = path.join("/sys/fs/cgroup/pids", env.namespace, id, "pids.current");
        if (fs.existsSync(pidsFile)) assert.ok(Math.abs(Number(fs.readFileSync(pidsFile, "utf8")) - metrics.usage.pids!.current) <= 2);
      }

      const exitEvent = nextExit(exits, id);
      const t0 = Date.now();
      const exit = await client.removeContainer(id, { graceMs: 5000 });
      assert.ok(Date.now() - t0 < 5000, "the agent ignored SIGTERM");
      // tini forwards SIGTERM; the agent shuts down cleanly (0) well within the grace period, not by SIGKILL (137).
      assert.equal(exit?.exitStatus, 0);
      const ev = await exitEvent;
      assert.equal(ev.exitStatus, 0);
      assert.equal(ev.pid, pid);
      assert.match(fs.readFileSync(logPath, "utf8"), /memoh-agent/);
    } finally {
      exits.close();
    }
    const left = await leftovers();
    assert.deepEqual(left, { tasks: [], containers: [], activeSnapshots: [] });
    assert.equal(await client.snapshots.exists(id), false);
  });
});

test("stdout and stderr land in the log file; stop of a stopped task just deletes it", async () => {
  const id = `log-${uid()}`;
  const logPath = path.join(env.dir, "logs", `${id}.log`);
  try {
    await client.createContainerFromImage({ id, image: busybox, specOpts: [withProcessArgs("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")] });
    await client.createTask(id, { logPath });
    const waiting = client.tasks.wait(id);
    await client.tasks.start(id);
    assert.equal((await waiting).exitStatus, 7);
    const exit = await client.removeContainer(id);
    assert.equal(exit?.exitStatus, 7);
    // The shim copies stdout and stderr to the file on their own; the exit can come before
    // the last of them is written.
    const log = await waitFor("both streams in the log", () => {
      const text = fs.readFileSync(logPath, "utf8");
      return /to-stdout/.test(text) && /to-stderr/.test(text) ? text : undefined;
    }, 10_000);
    assert.match(log, /to-stdout/);
    assert.match(log, /to-stderr/);
  } finally {
    await client.removeContainer(id, { graceMs: 500 }).catch(() => {});
  }
  assert.deepEqual(await leftovers(), { tasks: [], containers: [], activeSnapshots: [] });
});

test("a SIGTERM-ignoring task is SIGKILLed after the grace period", async () => {
  const id = `kill-${uid()}`;
  try {
    await client.createContainerFromImage({ id, image: busybox, specOpts: [withProcessArgs("sh", "-c", "trap '' TERM; while true; do sleep 0.1; done")] });
    await client.startContainer(id);
    const t0 = Date.now();
    const exit = await client.removeContainer(id, { graceMs: 300 });
    assert.equal(exit?.exitStatus, 137);
    assert.ok(Date.now() - t0 >= 300, "killed before the grace period ended");

    // A task that was created but never started is killed without a grace period.
    await client.createContainerFromImage({ id, image: busybox, specOpts: [withProcessArgs("sleep", "100")] });
    await client.createTask(id);
    assert.equal((await client.tasks.get(id)).status, "created");
    const t1 = Date.now();
    assert.equal((await client.removeContainer(id, { graceMs: 10_000 }))?.exitStatus, 137);
    assert.ok(Date.now() - t1 < 5_000);
  } finally {
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
  }
  assert.deepEqual(await leftovers(), { tasks: [], containers: [], activeSnapshots: [] });
});

test("a committed snapshot survives GC after its container is gone, and a new container starts from it", async () => {
  const id = `v-${uid()}`;
  const version = `${id}-v1`;
  const unprotected = `${id}-unprotected`;
  const id2 = `${id}-restored`;
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-snap-mnt-"));
  try {
    await client.createContainerFromImage({ id, image: busybox, specOpts: [withProcessArgs("sh", "-c", "mkdir -p /data && echo persisted > /data/v.txt")] });
    await client.startContainer(id);
    assert.equal((await client.tasks.wait(id)).exitStatus, 0);
    await client.tasks.delete(id);

    // The active snapshot, read-only on the host: the container's write is visible.
    await mountReadOnly(await client.snapshots.mounts(id), mnt);
    try {
      assert.equal(fs.readFileSync(path.join(mnt, "data/v.txt"), "utf8"), "persisted\n");
      assert.throws(() => fs.writeFileSync(path.join(mnt, "data/x"), "x"), /EROFS/);
    } finally {
      await unmount(mnt);
    }
    assert.equal(isMountPoint(mnt), false);

    await client.snapshots.commit(version, id);
    // A committed snapshot without gc.root and without references: GC must take it.
    const chainId = (await client.imageRootfs(busybox)).chainId;
    // The active one is a GC root until committed (a GC in between would take it).
    await client.snapshots.prepare(`${unprotected}-active`, chainId, { labels: { [GC_ROOT_LABEL]: "test" } });
    await client.snapshots.commit(unprotected, `${unprotected}-active`, { gcRoot: false });

    await client.containers.delete(id, { removeSnapshot: true });
    await client.collectGarbage();
    assert.equal(await client.snapshots.exists(unprotected), false, "GC did not run (the unprotected snapshot is still there)");
    const info = await client.snapshots.stat(version);
    assert.equal(info.kind, "committed");
    assert.equal(info.parent, chainId);

    // A read-only view of the version: a GC root, or a GC before its removal would take
    // it and leave the version a child link it could never be removed with.
    await mountReadOnly(await client.snapshots.view(`${version}-view`, version, { labels: { [GC_ROOT_LABEL]: "test" } }), mnt);
    try {
      assert.equal(fs.readFileSync(path.join(mnt, "data/v.txt"), "utf8"), "persisted\n");
    } finally {
      await unmount(mnt);
      await client.snapshots.remove(`${version}-view`);
    }

    const logPath = path.join(env.dir, "logs", `${id2}.log`);
    await client.createContainerFromImage({ id: id2, image: busybox, parentSnapshot: version, specOpts: [withProcessArgs("cat", "/data/v.txt")] });
    await client.startContainer(id2, { logPath });
    assert.equal((await client.tasks.wait(id2)).exitStatus, 0);
    await client.removeContainer(id2);
    assert.equal(fs.readFileSync(logPath, "utf8"), "persisted\n");
    await client.snapshots.remove(version);
  } finally {
    await unmount(mnt).catch(() => {});
    fs.rmSync(mnt, { recursive: true, force: true });
    for (const c of [id, id2]) await client.removeContainer(c, { graceMs: 0 }).catch(() => {});
    for (const s of [`${version}-view`, version, `${unprotected}-active`, unprotected]) await client.snapshots.remove(s, { ignoreNotFound: true }).catch(() => {});
  }
  assert.deepEqual(await leftovers(), { tasks: [], containers: [], activeSnapshots: [] });
});

test("deleting a container with its snapshot removes the snapshot first, while the container still holds it against GC", async () => {
  const id = `order-${uid()}`;
  const version = `${id}-v`;
  const chainId = (await client.imageRootfs(busybox)).chainId;
  await client.snapshots.prepare(`${version}-active`, chainId, { labels: { [GC_ROOT_LABEL]: "test" } });
  await client.snapshots.commit(version, `${version}-active`);
  const sub = client.subscribe([`topic=="/snapshot/remove"`, `topic=="/containers/delete"`, `topic=="/namespaces/create"`]);
  try {
    const it = sub[Symbol.asyncIterator]();
    await untilStreamLive(client, it.next(), "snapshot and container events");
    // No GC root on the container's snapshot: only the container keeps it.
    await client.createContainerFromImage({ id, image: busybox, parentSnapshot: version, specOpts: [withProcessArgs("true")] });
    await client.containers.delete(id, { removeSnapshot: true });
    const seen: string[] = [];
    while (seen.length < 2) {
      const r = await it.next();
      assert.equal(r.done, false, "the event stream ended");
      const e = r.value;
      if (e.topic === "/containers/delete") seen.push(`container ${fromBinary(ContainerDeleteSchema, e.value).id}`);
      else if (e.topic === "/snapshot/remove") seen.push(`snapshot ${firstStringField(e.value)}`);
    }
    assert.deepEqual(seen, [`snapshot ${id}`, `container ${id}`]);
    await client.snapshots.remove(version);
  } finally {
    sub.close();
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
    for (const s of [version, `${version}-active`]) await client.snapshots.remove(s, { ignoreNotFound: true }).catch(() => {});
  }
  assert.deepEqual(await leftovers(), { tasks: [], containers: [], activeSnapshots: [] });
});

/** Field 1 of a message as a string (SnapshotRemove's key; its schema is not generated here). */
function firstStringField(bytes: Uint8Array): string {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) return r.string();
    r.skip(wireType);
  }
  throw new Error("no field 1");
}

test("leases: labels, expiry label, list, delete", async () => {
  const lease = await client.createLease({ labels: { "memoh.purpose": "test" }, expiresInMs: 60_000 });
  const listed = await client.listLeases([`labels."memoh.purpose"==test`]);
  assert.deepEqual(listed.map((l) => l.id), [lease.id]);
  assert.ok(listed[0]!.labels["containerd.io/gc.expire"]);
  await client.deleteLease(lease.id);
  assert.deepEqual(await client.listLeases([`labels."memoh.purpose"==test`]), []);
  await assert.rejects(client.deleteLease(lease.id), (err) => err instanceof ContainerdError && err.code === "not_found");
});

test("containerd down: calls fail with code unavailable and a clear message", async () => {
  const env2 = await startContainerd();
  const c2 = new ContainerdClient({ address: env2.address, namespace: env2.namespace, defaultTimeoutMs: 5_000 });
  try {
    await c2.version();
    const events = c2.subscribe();
    const streamEnd = (async () => {
      for await (const _ of events) {
        // no events expected
      }
    })().then(
      () => undefined,
      (err: unknown) => err,
    );
    await env2.stop();
    // An open event stream ends with the same error instead of hanging.
    const streamError = await streamEnd;
    assert.ok(streamError instanceof ContainerdError && streamError.code === "unavailable", `stream ended with ${String(streamError)}`);
    events.close();
    const t0 = Date.now();
    await assert.rejects(c2.version(), (err) => {
      assert.ok(err instanceof ContainerdError);
      assert.equal(err.code, "unavailable");
      assert.match(err.message, /Version/);
      assert.match(err.message, /is containerd running\?/);
      return true;
    });
    assert.ok(Date.now() - t0 < 5_000);
    await assert.rejects(c2.ready(1000), (err) => err instanceof ContainerdError && err.code === "unavailable" && /does not exist/.test(err.message));
  } finally {
    c2.close();
    await env2.stop().catch(() => {});
  }
});

test("stop gives up on a task that cannot die: deadline_exceeded naming it after the kill timeout, the task left in place", { timeout: 60_000 }, async () => {
  // runc's kill --all freezes and thaws the container's own freezer cgroup, so freeze its parent:
  // the container stays frozen, SIGKILL stays pending, and the task cannot exit.
  assert.equal(detectCgroupVersion(), "v1", "this test freezes a cgroup v1 freezer (under cgroup v2 SIGKILL reaches frozen tasks)");
  const id = `frozen-${uid()}`;
  const parent = `/${env.namespace}/hold-${id}`;
  const freezerState = path.join(cgroupDir(parent, "freezer"), "freezer.state");
  const setFreezer = async (state: "FROZEN" | "THAWED") => {
    fs.writeFileSync(freezerState, state);
    const deadline = Date.now() + 20_000;
    for (let i = 1; fs.readFileSync(freezerState, "utf8").trim() !== state; i++) {
      if (Date.now() > deadline) throw new Error(`${freezerState} did not become ${state}`);
      await sleep(20);
      // A v1 freezer can stay FREEZING while a task sleeps uninterruptibly (a busy machine):
      // writing the state again makes the kernel try again.
      if (i % 25 === 0) fs.writeFileSync(freezerState, state);
    }
  };
  try {
    await client.createContainerFromImage({
      id,
      image: busybox,
      specOpts: [
        withProcessArgs("sleep", "100000"),
        (spec) => {
          spec.linux.cgroupsPath = `${parent}/${id}`;
        },
      ],
    });
    await client.startContainer(id);
    await setFreezer("FROZEN");

    const t0 = Date.now();
    await assert.rejects(client.tasks.stop(id, { graceMs: 200, killTimeoutMs: 1000 }), (err) => {
      assert.ok(err instanceof ContainerdError, String(err));
      assert.equal(err.code, "deadline_exceeded");
      assert.match(err.message, new RegExp(`task ${id} did not exit within 1000 ms after SIGKILL`));
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took >= 1200 && took < 8000, `stop gave up after ${took} ms (grace 200 + kill timeout 1000)`);
    assert.notEqual(await client.tasks.status(id), undefined, "the task was deleted although it did not exit");

    // Thawed, the pending SIGKILL lands: the next stop finds it gone and deletes it.
    await setFreezer("THAWED");
    const exit = await client.tasks.stop(id, { graceMs: 0, killTimeoutMs: 10_000 });
    assert.equal(exit?.exitStatus, 137);
    assert.equal(await client.tasks.status(id), undefined);
  } finally {
    if (fs.existsSync(freezerState)) fs.writeFileSync(freezerState, "THAWED");
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
    // runc removes the container's own cgroups, not the parent made for this test.
    for (const controller of fs.readdirSync("/sys/fs/cgroup")) {
      const dir = path.join("/sys/fs/cgroup", controller, parent);
      if (fs.existsSync(dir)) fs.rmdirSync(dir);
    }
  }
  assert.deepEqual(await leftovers(), { tasks: [], containers: [], activeSnapshots: [] });
});

/** The pid of `env`'s containerd, from /proc (the env does not hand it out). */
function daemonPid(e: ContainerdEnv): number {
  const config = path.join(e.dir, "config.toml");
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      if (path.basename(argv[0] ?? "") === "containerd" && argv.includes(config)) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no containerd process with --config ${config}`);
}

/**
 * Creates namespaces on `conn`'s daemon until `first` (the next event of a stream
 * subscribed just before) has resolved: a Subscribe only sees events published after
 * containerd registered it, which may be after an event made right away.
 */
async function untilStreamLive(creator: ContainerdClient, first: Promise<unknown>, what: string): Promise<void> {
  let live = false;
  void first.then(() => (live = true));
  const deadline = Date.now() + 20_000;
  while (!live) {
    if (Date.now() > deadline) throw new Error(`${what}: no event within 20 s`);
    await ensureNamespace(creator.conn, `probe-${randomBytes(4).toString("hex")}`);
    await Promise.race([first, sleep(100)]);
  }
}

test("a hung daemon: keepalive ends the silent event stream instead of letting it wait forever", { timeout: 60_000 }, async (t) => {
  const env2 = await startContainerd();
  const pid = daemonPid(env2);
  // The default client pings after 5.5 minutes: within this test its stream must still be waiting.
  const slow = new ContainerdClient({ address: env2.address, namespace: env2.namespace });
  let fast: ContainerdClient | undefined;
  let stopped = false;
  // A timed-out test must not leave the daemon stopped and the file's process waiting on it.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      if (stopped) process.kill(pid, "SIGCONT");
      stopped = false;
      fast?.close();
      slow.close();
      await env2.stop();
    })());
  t.signal.addEventListener("abort", () => void cleanup().catch(() => undefined), { once: true });
  try {
    const slowSub = slow.subscribe();
    const slowEvents = slowSub[Symbol.asyncIterator]();
    await untilStreamLive(slow, slowEvents.next(), "the default client's stream");
    // A 1 s keepalive is only safe for a few seconds: containerd answers a third ping
    // within 5 minutes with GOAWAY (too_many_pings), and a draining connection is no
    // longer watched. So this client is made last, proven live, and the daemon hung at once.
    fast = new ContainerdClient({ address: env2.address, namespace: env2.namespace, keepaliveTimeMs: 1000, keepaliveTimeoutMs: 1000 });
    const fastEvents = fast.subscribe()[Symbol.asyncIterator]();
    await untilStreamLive(slow, fastEvents.next(), "the fast-keepalive client's stream");

    process.kill(pid, "SIGSTOP");
    stopped = true;
    const t0 = Date.now();
    await assert.rejects(fastEvents.next(), (err) => {
      assert.ok(err instanceof ContainerdError, String(err));
      assert.equal(err.code, "unavailable", err.message);
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took < 5000, `the stream failed ${took} ms after the daemon hung (keepalive 1 s + 1 s)`);
    // At the moment the fast stream has failed (its 1 s keepalive saw the hang), the
    // default client's stream has not: it hands over the probes' events still queued
    // (settled before the next turn of the event loop), then is still waiting.
    const settledNow = <T>(p: Promise<T>): Promise<T | "waiting"> => Promise.race([p, new Promise<"waiting">((r) => setImmediate(() => r("waiting")))]);
    let slowState: "event" | "failed" | "waiting";
    let queued = 0;
    do {
      const next = slowEvents.next().then(
        () => "event" as const,
        () => "failed" as const,
      );
      slowState = await settledNow(next);
    } while (slowState === "event" && ++queued < 1000);
    assert.equal(slowState, "waiting", `without a short keepalive the stream should still wait (after ${queued} queued events)`);
    slowSub.close();
  } finally {
    await cleanup();
  }
});
