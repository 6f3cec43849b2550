// OCI spec options: each alone on the default spec, then composed.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import {
  ALL_CAPABILITIES,
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
  withCapabilities,
  withImageConfig,
  withMemoryLimit,
  withOomScoreAdj,
  withResources,
  withSeccomp,
  withSysctl,
  withoutCapabilities,
  linuxResources,
  type LinuxSeccomp,
  withMounts,
  withNetNS,
  withPidsLimit,
  withProcessArgs,
  withProcessCwd,
  withRlimit,
  withTZ,
  withUser,
} from "../../host/containerd/spec.js";
import { ALLOWED_PERSONALITIES, CLONE_NAMESPACE_FLAGS, defaultSeccompProfile } from "../../host/containerd/seccomp.js";

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
    // containerd's defaults (oci/spec.go), powercap's energy counters included.
    assert.deepEqual(s.linux.maskedPaths, [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/sys/firmware",
      "/sys/devices/virtual/powercap",
      "/proc/scsi",
    ]);
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

describe("resource limits", () => {
  test("withResources: memory with swap pinned to it, cpus as quota/period, pids", () => {
    const s = buildSpec(base(), withResources({ memoryBytes: 256 * 2 ** 20, cpus: 0.5, pids: 128 }));
    assert.deepEqual(s.linux.resources.memory, { limit: 256 * 2 ** 20, swap: 256 * 2 ** 20 });
    assert.deepEqual(s.linux.resources.cpu, { period: 100_000, quota: 50_000 });
    assert.deepEqual(s.linux.resources.pids, { limit: 128 });
    // The device rules stay.
    assert.deepEqual(s.linux.resources.devices, [{ allow: false, access: "rwm" }]);
  });

  test("withResources: unset limits stay as they are; limitSwap false drops memory.swap", () => {
    const s = buildSpec(base(), withResources({ memoryBytes: 1 << 30, pids: 64 }), withResources({ pids: 32 }));
    assert.deepEqual(s.linux.resources.memory, { limit: 1 << 30, swap: 1 << 30 });
    assert.deepEqual(s.linux.resources.pids, { limit: 32 });
    assert.equal(s.linux.resources.cpu, undefined);
    const noSwap = buildSpec(base(), withResources({ memoryBytes: 1 << 30 }), withResources({ memoryBytes: 1 << 29 }, { limitSwap: false }));
    assert.deepEqual(noSwap.linux.resources.memory, { limit: 1 << 29 });
  });

  test("withResources and linuxResources refuse bad limits", () => {
    assert.throws(() => withResources({ memoryBytes: 0 }), /memoryBytes must be a positive integer, got 0/);
    assert.throws(() => withResources({ memoryBytes: 1.5 }), /memoryBytes/);
    assert.throws(() => withResources({ cpus: 0.001 }), /cpus must be at least 0.01/);
    assert.throws(() => withResources({ cpus: Number.NaN }), /cpus/);
    assert.throws(() => withResources({ pids: -1 }), /pids must be a positive integer/);
    assert.throws(() => withResources({ memory: 5 } as never), /unknown field "memory"/);
    assert.throws(() => linuxResources({ pids: 0 }), /pids/);
  });

  test("linuxResources: the same limits for Tasks.Update, nothing else", () => {
    assert.deepEqual(linuxResources({ memoryBytes: 64 * 2 ** 20, cpus: 2, pids: 50 }), {
      memory: { limit: 64 * 2 ** 20, swap: 64 * 2 ** 20 },
      cpu: { period: 100_000, quota: 200_000 },
      pids: { limit: 50 },
    });
    assert.deepEqual(linuxResources({ pids: 10 }), { pids: { limit: 10 } });
    assert.deepEqual(linuxResources({ memoryBytes: 4096 }, { limitSwap: false }), { memory: { limit: 4096 } });
  });
});

describe("security options", () => {
  test("withoutCapabilities drops from every set; the workspace default is containerd's without NET_RAW", () => {
    const s = buildSpec(base(), withoutCapabilities("CAP_NET_RAW"));
    const expected = DEFAULT_CAPABILITIES.filter((c) => c !== "CAP_NET_RAW");
    assert.deepEqual(s.process.capabilities, { bounding: expected, effective: expected, permitted: expected });
    // Short names work; dropping what is not there is fine.
    const s2 = buildSpec(base(), withoutCapabilities("NET_RAW", "MKNOD", "SYS_ADMIN"));
    assert.ok(!s2.process.capabilities.bounding.includes("CAP_MKNOD"));
    assert.equal(s2.process.capabilities.bounding.length, DEFAULT_CAPABILITIES.length - 2);
    assert.throws(() => withoutCapabilities("CAP_NET_RAWW"), /unknown capability "CAP_NET_RAWW"/);
  });

  test("withCapabilities sets exactly the given set; inheritable and ambient keep only what is granted", () => {
    const s = buildSpec(
      base(),
      (spec) => {
        spec.process.capabilities.inheritable = ["CAP_KILL", "CAP_NET_RAW"];
        spec.process.capabilities.ambient = ["CAP_NET_RAW"];
      },
      withCapabilities(["CAP_CHOWN", "KILL", "CAP_CHOWN"]),
    );
    assert.deepEqual(s.process.capabilities, {
      bounding: ["CAP_CHOWN", "CAP_KILL"],
      effective: ["CAP_CHOWN", "CAP_KILL"],
      permitted: ["CAP_CHOWN", "CAP_KILL"],
      inheritable: ["CAP_KILL"],
      ambient: [],
    });
    assert.deepEqual(buildSpec(base(), withCapabilities([])).process.capabilities.bounding, []);
    assert.throws(() => withCapabilities(["cap_chown"]), /unknown capability/);
    assert.equal(ALL_CAPABILITIES.length, 41);
  });

  test("withSysctl sets and merges kernel parameters; bad names are refused", () => {
    const s = buildSpec(base(), withSysctl("net.ipv4.ping_group_range", "0 2147483647"), withSysctl("net.core.somaxconn", "1024"), withSysctl("net.core.somaxconn", "4096"));
    assert.deepEqual(s.linux.sysctl, { "net.ipv4.ping_group_range": "0 2147483647", "net.core.somaxconn": "4096" });
    assert.throws(() => withSysctl("net/ipv4/ip_forward", "1"), /bad name/);
    assert.throws(() => withSysctl("kernel", "1"), /bad name/);
    assert.throws(() => withSysctl("net.ipv4.ip_forward", "1\n"), /bad value/);
  });

  test("withOomScoreAdj sets process.oomScoreAdj within -1000..1000", () => {
    assert.equal(buildSpec(base(), withOomScoreAdj(-998)).process.oomScoreAdj, -998);
    assert.equal(buildSpec(base(), withOomScoreAdj(1000)).process.oomScoreAdj, 1000);
    assert.throws(() => withOomScoreAdj(-1001), /-1000 to 1000/);
    assert.throws(() => withOomScoreAdj(0.5), /integer/);
  });

  test("withSeccomp puts a copy of the profile into linux.seccomp", () => {
    const profile = defaultSeccompProfile({ arch: "x64", kernelRelease: "6.1.0" });
    const s = buildSpec(base(), withSeccomp(profile));
    assert.deepEqual(s.linux.seccomp, profile);
    profile.syscalls!.length = 0;
    assert.ok(s.linux.seccomp!.syscalls!.length > 1, "the spec shares the caller's profile object");
    assert.deepEqual(JSON.parse(JSON.stringify(s)).linux.seccomp, s.linux.seccomp);
  });

  test("withSeccomp refuses a malformed profile", () => {
    const ok: LinuxSeccomp = { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: ["read"], action: "SCMP_ACT_ALLOW" }] };
    assert.doesNotThrow(() => withSeccomp(ok));
    assert.throws(() => withSeccomp({ ...ok, defaultAction: "SCMP_ACT_DENY" as never }), /unknown defaultAction "SCMP_ACT_DENY"/);
    assert.throws(() => withSeccomp({ ...ok, architectures: ["SCMP_ARCH_Z80" as never] }), /unknown architecture/);
    assert.throws(() => withSeccomp({ ...ok, syscalls: [{ names: [], action: "SCMP_ACT_ALLOW" }] }), /syscalls\[0\] has no names/);
    assert.throws(() => withSeccomp({ ...ok, syscalls: [{ names: ["Read!"], action: "SCMP_ACT_ALLOW" }] }), /bad syscall name/);
    assert.throws(
      () => withSeccomp({ ...ok, syscalls: [{ names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 6, value: 0, op: "SCMP_CMP_EQ" }] }] }),
      /argument index must be 0–5/,
    );
    assert.throws(
      () => withSeccomp({ ...ok, syscalls: [{ names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: -1, op: "SCMP_CMP_EQ" }] }] }),
      /non-negative integers/,
    );
    assert.throws(() => withSeccomp({ ...ok, syscalls: [{ names: ["x"], action: "SCMP_ACT_ERRNO", errnoRet: -1 }] }), /errnoRet/);
  });
});

describe("default seccomp profile", () => {
  const profile = defaultSeccompProfile({ arch: "x64", kernelRelease: "6.1.0-18-amd64" });
  const allowedUnconditionally = new Set(profile.syscalls!.filter((r) => r.action === "SCMP_ACT_ALLOW" && !r.args?.length).flatMap((r) => r.names));
  const rulesFor = (name: string) => profile.syscalls!.filter((r) => r.names.includes(name));

  test("unknown syscalls fail with EPERM; x86_64, x86 and x32 are filtered", () => {
    assert.equal(profile.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(profile.defaultErrnoRet, 1);
    assert.deepEqual(profile.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    assert.deepEqual(defaultSeccompProfile({ arch: "arm64", kernelRelease: "6.1.0" }).architectures, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
    assert.throws(() => defaultSeccompProfile({ arch: "mips" }), /no profile for architecture mips/);
  });

  test("what reaches past the container has no allow rule", () => {
    for (const name of [
      "mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "init_module",
      "finit_module", "delete_module", "kexec_load", "kexec_file_load", "open_by_handle_at", "pivot_root", "swapon", "swapoff",
      "reboot", "userfaultfd", "io_uring_setup", "settimeofday", "clock_settime", "sethostname", "acct", "syslog",
    ]) {
      assert.deepEqual(rulesFor(name), [], `${name} is allowed`);
    }
  });

  test("ordinary work is allowed: files, processes, threads, sockets, memory, signals", () => {
    for (const name of ["read", "openat", "execve", "fork", "vfork", "wait4", "futex", "mmap", "socket", "connect", "epoll_wait", "getrandom", "rseq", "arch_prctl", "chroot", "statx", "ptrace"]) {
      assert.ok(allowedUnconditionally.has(name), `${name} is not allowed`);
    }
  });

  test("clone only without namespace flags; clone3 answers ENOSYS so glibc falls back to clone", () => {
    assert.deepEqual(rulesFor("clone"), [
      { names: ["clone"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }] },
    ]);
    // CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET; not CLONE_THREAD or CLONE_VM.
    assert.equal(CLONE_NAMESPACE_FLAGS, 0x7e020000);
    assert.equal(CLONE_NAMESPACE_FLAGS & 0x00010000, 0);
    assert.deepEqual(rulesFor("clone3"), [{ names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 }]);
  });

  test("personality only for the usual personas", () => {
    const values = rulesFor("personality").map((r) => {
      assert.equal(r.action, "SCMP_ACT_ALLOW");
      assert.equal(r.args?.length, 1);
      assert.equal(r.args![0]!.op, "SCMP_CMP_EQ");
      return r.args![0]!.value;
    });
    assert.deepEqual(values, ALLOWED_PERSONALITIES);
    assert.deepEqual(values, [0, 8, 0x20000, 0x20008, 0xffffffff]);
  });

  test("ptrace only from Linux 4.8 on; arm64 gets its own calls", () => {
    const old = defaultSeccompProfile({ arch: "x64", kernelRelease: "4.4.0-210-generic" });
    assert.ok(!old.syscalls!.some((r) => r.names.includes("ptrace")));
    assert.ok(defaultSeccompProfile({ arch: "x64", kernelRelease: "4.8.0" }).syscalls!.some((r) => r.names.includes("ptrace")));
    const arm = defaultSeccompProfile({ arch: "arm64", kernelRelease: "6.1.0" });
    assert.ok(arm.syscalls![0]!.names.includes("set_tls"));
    assert.ok(!arm.syscalls![0]!.names.includes("arch_prctl"));
  });

  test("passes its own validation and names each syscall once", () => {
    assert.doesNotThrow(() => withSeccomp(profile));
    const names = profile.syscalls![0]!.names;
    assert.equal(new Set(names).size, names.length);
    assert.ok(names.length > 300, `only ${names.length} syscalls allowed`);
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
