// OCI spec options: each alone on the default spec, then composed.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH_ENV,
  bindMount,
  buildSpec,
  defaultUnixSpec,
  mergeEnv,
  parseUser,
  withCpuLimit,
  withDevice,
  withEnv,
  withHostNetwork,
  withHostname,
  withImageConfig,
  withMemoryLimit,
  withMounts,
  withNetNS,
  withPidsLimit,
  withProcessArgs,
  withProcessCwd,
  withRlimit,
  withTZ,
  withUser,
} from "../../host/containerd/spec.js";

const base = () => defaultUnixSpec("memoh", "ws-1");

describe("default unix spec", () => {
  test("has what runc needs, like containerd's", () => {
    const s = base();
    assert.equal(s.root.path, "rootfs");
    assert.equal(s.linux.cgroupsPath, "/memoh/ws-1");
    assert.deepEqual(s.process.env, [DEFAULT_PATH_ENV]);
    assert.equal(s.process.cwd, "/");
    assert.equal(s.process.noNewPrivileges, true);
    assert.deepEqual(s.process.user, { uid: 0, gid: 0 });
    assert.deepEqual(s.process.rlimits, [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }]);
    assert.deepEqual(s.process.capabilities.bounding, DEFAULT_CAPABILITIES);
    assert.ok(!s.process.capabilities.bounding.includes("CAP_SYS_ADMIN"));
    assert.deepEqual(
      s.mounts.map((m) => `${m.destination}:${m.type}`),
      ["/proc:proc", "/dev:tmpfs", "/dev/pts:devpts", "/dev/shm:tmpfs", "/dev/mqueue:mqueue", "/sys:sysfs", "/run:tmpfs"],
    );
    assert.ok(s.mounts.find((m) => m.destination === "/sys")?.options?.includes("ro"));
    assert.deepEqual(s.linux.namespaces.map((n) => n.type).sort(), ["ipc", "mount", "network", "pid", "uts"]);
    assert.ok(s.linux.maskedPaths.includes("/proc/kcore"));
    assert.ok(s.linux.readonlyPaths.includes("/proc/sys"));
    assert.deepEqual(s.linux.resources.devices, [{ allow: false, access: "rwm" }]);
  });

  test("buildSpec leaves its base untouched", () => {
    const b = base();
    const before = JSON.stringify(b);
    buildSpec(b, withProcessArgs("x"), withEnv({ A: "1" }), withMemoryLimit(1));
    assert.equal(JSON.stringify(b), before);
  });
});

describe("process options", () => {
  test("withProcessArgs replaces the argv", () => {
    assert.deepEqual(buildSpec(base(), withProcessArgs("a"), withProcessArgs("/bin/sh", "-c", "true")).process.args, ["/bin/sh", "-c", "true"]);
  });

  test("withEnv merges by key: replaces in place, appends new", () => {
    const s = buildSpec(base(), withEnv(["A=1", "B=2"]), withEnv({ A: "3", C: "x=y" }));
    assert.deepEqual(s.process.env, [DEFAULT_PATH_ENV, "A=3", "B=2", "C=x=y"]);
    assert.deepEqual(mergeEnv(["PATH=/bin"], ["PATH=/usr/bin"]), ["PATH=/usr/bin"]);
  });

  test("withProcessCwd", () => {
    assert.equal(buildSpec(base(), withProcessCwd("/data")).process.cwd, "/data");
  });

  test("withTZ sets TZ once", () => {
    const s = buildSpec(base(), withTZ("UTC"), withTZ("Europe/Berlin"));
    assert.deepEqual(s.process.env.filter((e) => e.startsWith("TZ=")), ["TZ=Europe/Berlin"]);
  });

  test("withRlimit replaces a limit of the same type", () => {
    const s = buildSpec(base(), withRlimit("RLIMIT_NOFILE", 65536));
    assert.deepEqual(s.process.rlimits, [{ type: "RLIMIT_NOFILE", soft: 65536, hard: 65536 }]);
  });

  test("withUser: numeric uid, uid:gid; names need the image's passwd/group", () => {
    assert.deepEqual(buildSpec(base(), withUser("1000:1001")).process.user, { uid: 1000, gid: 1001 });
    assert.deepEqual(parseUser("1000"), { uid: 1000, gid: 0 });
    assert.throws(() => parseUser("nobody"), /user name "nobody" cannot be resolved without the image's \/etc\/passwd/);
    const passwd = "root:x:0:0::/root:/bin/sh\nbot:x:1000:1000::/home/bot:/bin/sh\n";
    const group = "root:x:0:\nstaff:x:50:\n";
    assert.deepEqual(parseUser("bot", { passwd }), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseUser("bot:staff", { passwd, group }), { uid: 1000, gid: 50 });
    assert.deepEqual(parseUser("1000", { passwd }), { uid: 1000, gid: 1000 });
    assert.throws(() => parseUser("ghost", { passwd }), /"ghost" is not in the image's \/etc\/passwd/);
  });

  test("withImageConfig: env merged, entrypoint + cmd, working dir, user", () => {
    const s = buildSpec(
      base(),
      withEnv({ KEEP: "1" }),
      withImageConfig({ Env: ["PATH=/opt/bin:/bin", "LANG=C.UTF-8"], Entrypoint: ["/entry"], Cmd: ["--flag"], WorkingDir: "/srv", User: "33:33" }),
    );
    assert.deepEqual(s.process.env, ["PATH=/opt/bin:/bin", "KEEP=1", "LANG=C.UTF-8"]);
    assert.deepEqual(s.process.args, ["/entry", "--flag"]);
    assert.equal(s.process.cwd, "/srv");
    assert.deepEqual(s.process.user, { uid: 33, gid: 33 });
    const empty = buildSpec(base(), withProcessArgs("keep"), withImageConfig({ Cmd: null, WorkingDir: "" }));
    assert.deepEqual(empty.process.args, ["keep"]);
    assert.equal(empty.process.cwd, "/");
    assert.throws(() => buildSpec(base(), withImageConfig({ User: "www-data" })), /www-data/);
  });
});

describe("mounts, identity, namespaces", () => {
  test("withMounts appends bind mounts with their options and replaces by destination", () => {
    const s = buildSpec(
      base(),
      withMounts([bindMount("/host/runtime", "/opt/memoh", ["rbind", "ro"]), bindMount("/host/sock", "/run")]),
    );
    assert.deepEqual(s.mounts.find((m) => m.destination === "/opt/memoh"), { destination: "/opt/memoh", type: "bind", source: "/host/runtime", options: ["rbind", "ro"] });
    const run = s.mounts.filter((m) => m.destination === "/run");
    assert.deepEqual(run, [{ destination: "/run", type: "bind", source: "/host/sock", options: ["rbind", "rw"] }]);
    assert.equal(s.mounts.length, base().mounts.length + 1);
  });

  test("withHostname", () => {
    assert.equal(buildSpec(base(), withHostname("bot-1")).hostname, "bot-1");
  });

  test("withNetNS joins a path; withHostNetwork drops the namespace; withNetNS() a new one", () => {
    const joined = buildSpec(base(), withNetNS("/var/run/netns/cni-1"));
    assert.deepEqual(joined.linux.namespaces.filter((n) => n.type === "network"), [{ type: "network", path: "/var/run/netns/cni-1" }]);
    assert.equal(buildSpec(base(), withHostNetwork()).linux.namespaces.some((n) => n.type === "network"), false);
    assert.deepEqual(buildSpec(base(), withHostNetwork(), withNetNS()).linux.namespaces.filter((n) => n.type === "network"), [{ type: "network" }]);
  });
});

describe("resources", () => {
  test("withMemoryLimit", () => {
    assert.equal(buildSpec(base(), withMemoryLimit(512 * 2 ** 20)).linux.resources.memory?.limit, 512 * 2 ** 20);
  });

  test("withCpuLimit: cpus → quota/period, explicit quota/period, shares", () => {
    assert.deepEqual(buildSpec(base(), withCpuLimit({ cpus: 1.5 })).linux.resources.cpu, { period: 100_000, quota: 150_000 });
    assert.deepEqual(buildSpec(base(), withCpuLimit({ quota: 20_000, period: 50_000 })).linux.resources.cpu, { quota: 20_000, period: 50_000 });
    assert.deepEqual(buildSpec(base(), withCpuLimit({ shares: 512 }), withCpuLimit({ cpus: 2 })).linux.resources.cpu, { shares: 512, period: 100_000, quota: 200_000 });
    assert.throws(() => buildSpec(base(), withCpuLimit({ cpus: 0 })), /cpus must be > 0/);
  });

  test("withPidsLimit", () => {
    assert.deepEqual(buildSpec(base(), withPidsLimit(256)).linux.resources.pids, { limit: 256 });
  });

  test("withDevice adds the node and an allow rule after the deny-all", () => {
    const s = buildSpec(base(), withDevice({ path: "/dev/fuse", type: "c", major: 10, minor: 229 }));
    assert.deepEqual(s.linux.devices, [{ path: "/dev/fuse", type: "c", major: 10, minor: 229 }]);
    assert.deepEqual(s.linux.resources.devices?.at(-1), { allow: true, type: "c", major: 10, minor: 229, access: "rwm" });
  });
});

test("composed: a workspace spec", () => {
  const s = buildSpec(
    base(),
    withImageConfig({ Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"] }),
    withProcessArgs("/opt/memoh/bin/tini", "-g", "--", "/opt/memoh/bin/node", "/opt/memoh/agent.js"),
    withEnv({ BRIDGE_SOCKET_PATH: "/run/memoh/bridge.sock" }),
    withMounts([bindMount("/rt", "/opt/memoh", ["rbind", "ro"]), bindMount("/sock", "/run/memoh", ["rbind", "rw"])]),
    withHostname("ws-1"),
    withMemoryLimit(2 ** 30),
    withCpuLimit({ cpus: 1 }),
    withPidsLimit(512),
    withTZ("UTC"),
    withNetNS("/proc/123/ns/net"),
  );
  assert.equal(s.process.args[0], "/opt/memoh/bin/tini");
  assert.deepEqual(s.process.env, ["PATH=/usr/bin:/bin", "BRIDGE_SOCKET_PATH=/run/memoh/bridge.sock", "TZ=UTC"]);
  assert.deepEqual(s.mounts.slice(-2).map((m) => m.destination), ["/opt/memoh", "/run/memoh"]);
  assert.equal(s.hostname, "ws-1");
  assert.deepEqual(s.linux.resources, {
    devices: [{ allow: false, access: "rwm" }],
    memory: { limit: 2 ** 30 },
    cpu: { period: 100_000, quota: 100_000 },
    pids: { limit: 512 },
  });
  assert.equal(s.linux.namespaces.find((n) => n.type === "network")?.path, "/proc/123/ns/net");
  // What goes over the wire is plain JSON that round-trips.
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
});
