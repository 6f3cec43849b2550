// The workspace sandbox against a private containerd: the default seccomp profile,
// capabilities without NET_RAW, the ping sysctl, an OOM score and resource limits.
// What it must refuse is refused (and is not without the sandbox), ordinary work
// still runs, the OOM killer and the pids limit do what they should, and limits
// change on a running task.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { BridgeClient } from "../../host/bridge/client.js";
import { ContainerdClient } from "../../host/containerd/client.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { cgroupDir, detectCgroupVersion, readCgroupStats, swapLimitSupported } from "../../host/containerd/cgroups.js";
import { defaultSeccompProfile } from "../../host/containerd/seccomp.js";
import {
  bindMount,
  linuxResources,
  withEnv,
  withMounts,
  withOomScoreAdj,
  withProcessArgs,
  withResources,
  withSeccomp,
  withSysctl,
  withoutCapabilities,
  type ResourceLimits,
  type SpecOpt,
} from "../../host/containerd/spec.js";
import { startContainerd, type ContainerdEnv, type CtrResult } from "./env/containerd.js";
import { buildTestImages, importTestImages } from "./env/images.js";
import { OOM_SCORES } from "../../host/workspace/container-spec.js";
import { DEFAULT_AGENT_ARGS, DEFAULT_RUNTIME_DIR, requireRuntimeBundle, waitForSocket } from "./env/container.js";

const EPERM = 1;
const EACCES = 13;
const ENOSYS = 38;
const MiB = 1024 * 1024;
const PROBE_SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), "sandbox-probe.c");

let env: ContainerdEnv;
let client: ContainerdClient;
let images: { busybox: string; glibc: string };
let probeDir: string;
const uid = () => randomBytes(3).toString("hex");
/**
 * The workspace's init gets 0 and what it spawns a higher score, as the manager sets
 * them (OOM_SCORES in host/workspace/container-spec.ts): never below 0, which would
 * let anything in the container lower itself below the host's own processes.
 */
const INIT_OOM_SCORE_ADJ = OOM_SCORES.agent;

before(async () => {
  requireRuntimeBundle();
  env = await startContainerd();
  images = await importTestImages(env, await buildTestImages());
  client = new ContainerdClient({ address: env.address, namespace: env.namespace, runcOptions: { root: env.runcRoot } });
  await client.ready();
  probeDir = path.join(env.dir, "probe");
  fs.mkdirSync(probeDir, { recursive: true });
  execFileSync("gcc", ["-static", "-O1", "-Wall", "-o", path.join(probeDir, "probe"), PROBE_SOURCE], { stdio: "pipe" });
});

after(async () => {
  client?.close();
  await env?.stop();
});

/** What the workspace manager puts around a workspace. */
function sandbox(limits: ResourceLimits = {}): SpecOpt[] {
  return [
    withSeccomp(defaultSeccompProfile()),
    withoutCapabilities("CAP_NET_RAW"),
    withSysctl("net.ipv4.ping_group_range", "0 2147483647"),
    withOomScoreAdj(INIT_OOM_SCORE_ADJ),
    withResources({ memoryBytes: 256 * MiB, cpus: 1, pids: 256, ...limits }, { limitSwap: swapLimitSupported() }),
  ];
}

const withProbe = (): SpecOpt => withMounts([bindMount(probeDir, "/probe", ["rbind", "ro"])]);
const cgroupsPathOf = (id: string) => `/${env.namespace}/${id}`;

/** Runs a container to its exit; returns its exit status and output. */
async function runToExit(id: string, image: string, specOpts: SpecOpt[], timeoutMs = 60_000): Promise<{ exitStatus: number; output: string }> {
  const logPath = path.join(env.dir, "logs", `${id}.log`);
  await client.createContainerFromImage({ id, image, specOpts });
  try {
    await client.createTask(id, { logPath });
    const waiting = client.tasks.wait(id, { timeoutMs });
    await client.tasks.start(id);
    const { exitStatus } = await waiting;
    return { exitStatus, output: fs.readFileSync(logPath, "utf8") };
  } finally {
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
  }
}

/** Starts a long-running container; returns its log path. */
async function startLongRunning(id: string, image: string, specOpts: SpecOpt[]): Promise<string> {
  const logPath = path.join(env.dir, "logs", `${id}.log`);
  await client.createContainerFromImage({ id, image, specOpts });
  await client.startContainer(id, { logPath });
  return logPath;
}

/** `ctr tasks exec` in the container: same spec, so the same sandbox. */
function exec(id: string, argv: string[], timeoutMs = 60_000): Promise<CtrResult> {
  return env.ctr(["tasks", "exec", "--exec-id", `x-${uid()}`, "--fifo-dir", env.fifoDir, id, ...argv], { check: false, timeoutMs });
}

function parseProbe(output: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of output.split("\n")) {
    const m = /^(\w+) (\d+)$/.exec(line.trim());
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

const readCgroupFile = (id: string, controller: string, file: string) => fs.readFileSync(path.join(cgroupDir(cgroupsPathOf(id), controller), file), "utf8").trim();

describe("the default seccomp profile, capabilities and sysctl", () => {
  let sandboxed: Record<string, number>;
  let control: Record<string, number>;

  before(async () => {
    const probe = [withProcessArgs("/probe/probe", "syscalls"), withProbe()];
    const inside = await runToExit(`probe-${uid()}`, images.busybox, [...probe, ...sandbox()]);
    assert.equal(inside.exitStatus, 0, inside.output);
    sandboxed = parseProbe(inside.output);
    // containerd's default spec: no seccomp filter, the default capabilities (with NET_RAW), no sysctl.
    const outside = await runToExit(`control-${uid()}`, images.busybox, probe);
    assert.equal(outside.exitStatus, 0, outside.output);
    control = parseProbe(outside.output);
  });

  test("namespaces, mounts, keyrings, BPF, perf, modules, kexec, swap, reboot, userfaultfd and io_uring fail with EPERM", () => {
    const refused = [
      "unshare_user", "unshare_mount", "clone_newuser", "clone_newns", "setns", "mount", "umount2", "pivot_root",
      "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "init_module", "finit_module", "delete_module",
      "kexec_load", "kexec_file_load", "open_by_handle_at", "swapon", "swapoff", "reboot", "userfaultfd",
      "io_uring_setup", "personality_no_aslr",
    ];
    const wrong = refused.filter((name) => sandboxed[name] !== EPERM).map((name) => `${name}=${sandboxed[name]}`);
    assert.deepEqual(wrong, [], `not refused with EPERM in the sandbox: ${wrong.join(", ")}`);
  });

  test("without the sandbox the same calls are not refused: the EPERMs come from the profile", () => {
    // These need no capability, so only the filter can refuse them.
    for (const name of ["unshare_user", "clone_newuser", "keyctl", "add_key", "request_key", "io_uring_setup", "personality_no_aslr"]) {
      assert.ok(control[name] !== undefined && control[name] !== EPERM, `${name} = ${control[name]} without the sandbox`);
    }
    assert.equal(control.clone3, 0);
  });

  test("ordinary process calls work: clone without namespace flags, threads (clone3 answers ENOSYS, glibc falls back), ptrace, personality queries", () => {
    assert.equal(sandboxed.clone_plain, 0);
    assert.equal(sandboxed.clone3, ENOSYS);
    assert.equal(sandboxed.pthread_create, 0);
    assert.equal(sandboxed.ptrace_traceme, 0);
    assert.equal(sandboxed.personality_query, 0);
  });

  test("an ICMP echo over a datagram socket works (ping_group_range), a raw socket does not (no NET_RAW)", () => {
    assert.equal(sandboxed.icmp_echo_dgram, 0);
    assert.equal(sandboxed.raw_socket, EPERM);
    // Without the sysctl no group may open ICMP datagram sockets; with NET_RAW raw sockets work.
    assert.equal(control.icmp_echo_dgram, EACCES);
    assert.equal(control.raw_socket, 0);
  });

  test("busybox: unshare -U and mount -t tmpfs are refused; without the sandbox unshare -U works", async () => {
    const id = `bb-${uid()}`;
    const controlId = `bb-control-${uid()}`;
    try {
      await startLongRunning(id, images.busybox, [withProcessArgs("sleep", "100000"), ...sandbox()]);
      const unshare = await exec(id, ["unshare", "-U", "true"]);
      assert.notEqual(unshare.code, 0);
      assert.match(unshare.stderr, /Operation not permitted/);
      const mount = await exec(id, ["sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t"]);
      assert.notEqual(mount.code, 0);
      assert.match(mount.stderr, /permission denied|Operation not permitted/i);

      await startLongRunning(controlId, images.busybox, [withProcessArgs("sleep", "100000")]);
      const unshareOutside = await exec(controlId, ["unshare", "-U", "true"]);
      assert.equal(unshareOutside.code, 0, unshareOutside.stderr);
    } finally {
      for (const c of [id, controlId]) await client.removeContainer(c, { graceMs: 0 }).catch(() => {});
    }
  });
});

test("ordinary work runs in the sandbox: the agent, shells, gcc, python, node worker threads, npm, files", { timeout: 240_000 }, async () => {
  const id = `work-${uid()}`;
  const socketDir = path.join(env.dir, "sockets", id);
  fs.mkdirSync(socketDir, { recursive: true });
  try {
    // The glibc image with this machine's /usr over its own: gcc, python3 and friends.
    await startLongRunning(id, images.glibc, [
      withProcessArgs(...DEFAULT_AGENT_ARGS),
      withEnv({ BRIDGE_SOCKET_PATH: "/run/memoh/bridge.sock" }),
      withMounts([
        bindMount("/usr", "/usr", ["rbind", "ro"]),
        bindMount(DEFAULT_RUNTIME_DIR, "/opt/memoh", ["rbind", "ro"]),
        bindMount(socketDir, "/run/memoh", ["rbind", "rw"]),
      ]),
      ...sandbox({ memoryBytes: 1024 * MiB }),
    ]);
    // tini and the node agent under the filter.
    await waitForSocket(path.join(socketDir, "bridge.sock"), 20_000);
    const bridge = new BridgeClient(`unix:${path.join(socketDir, "bridge.sock")}`);
    try {
      assert.equal((await bridge.info()).listen, "unix:/run/memoh/bridge.sock");
    } finally {
      bridge.close();
    }

    const run = async (script: string, expected: RegExp) => {
      const r = await exec(id, ["/bin/sh", "-c", script], 120_000);
      assert.equal(r.code, 0, `${script}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, expected, script);
    };
    await run("echo a | tr a b", /^b\n$/);
    await run("mkdir -p /data/w && cd /data/w && echo hello > f && cp f g && mv g h && cat h && rm f h && ls -A && echo empty", /^hello\nempty\n$/);
    await run(
      `mkdir -p /tmp/cc && cd /tmp/cc && printf '%s\\n' '#include <stdio.h>' '#include <pthread.h>' 'static void *t(void *a) { puts("from a thread"); return a; }' 'int main(void) { pthread_t th; pthread_create(&th, 0, t, 0); pthread_join(th, 0); puts("compiled"); return 0; }' > hello.c && gcc -O2 -o hello hello.c && ./hello`,
      /from a thread\ncompiled\n/,
    );
    await run(
      `python3 -c "import threading, subprocess; r = []; t = threading.Thread(target=lambda: r.append(subprocess.run(['echo', 'py'], capture_output=True, text=True).stdout.strip())); t.start(); t.join(); print(r[0])"`,
      /^py\n$/,
    );
    await run(
      `/opt/memoh/bin/node -e "const { Worker } = require('node:worker_threads'); const cp = require('node:child_process'); new Worker('require(\\'node:worker_threads\\').parentPort.postMessage(6 * 7)', { eval: true }).on('message', (m) => { console.log('worker ' + m + ' ' + cp.execSync('echo child').toString().trim()); process.exit(0); });"`,
      /^worker 42 child\n$/,
    );
    await run(
      "export PATH=/opt/memoh/toolkit/bin:$PATH HOME=/tmp/home NO_UPDATE_NOTIFIER=1 npm_config_update_notifier=false npm_config_audit=false npm_config_fund=false; " +
        "mkdir -p /data/lib /data/app && cd /data/lib && npm init -y >/dev/null && npm pack --silent >/dev/null && " +
        "cd /data/app && npm init -y >/dev/null && npm install --offline ../lib/lib-1.0.0.tgz >/dev/null && node -e \"console.log(require('lib/package.json').name)\"",
      /^lib\n$/,
    );
  } finally {
    await client.removeContainer(id, { graceMs: 1000 }).catch(() => {});
  }
});

describe("memory limit and OOM scores", () => {
  const limit = 64 * MiB;
  // init holds more memory than the hog will have when the limit is hit: at equal scores
  // the OOM killer takes init, so only the scores keep it alive.
  const initHoldsMiB = 36;
  const oomScript = (hogAdj: number) =>
    [
      `/probe/probe hog ${hogAdj} & hog=$!`,
      // The hog inherits init's score; raising it needs no capability.
      `echo ${hogAdj} > "/proc/$hog/oom_score_adj"`,
      'wait "$hog"; echo "hog exited $?"',
    ].join("\n");
  const initArgs = (hogAdj: number) => withProcessArgs("/probe/probe", "hold", String(initHoldsMiB), "/bin/sh", "-c", oomScript(hogAdj));

  test("a hog is OOM-killed (counter, /tasks/oom event); init, with the lower score, survives", { timeout: 120_000 }, async () => {
    const id = `oom-${uid()}`;
    const hogAdj = OOM_SCORES.children;
    const ooms = client.subscribeTaskOoms();
    const oomEvent = (async () => {
      for await (const e of ooms) if (e.containerId === id) return e;
      return undefined;
    })();
    try {
      const logPath = await startLongRunning(id, images.busybox, [initArgs(hogAdj), withProbe(), ...sandbox({ memoryBytes: limit })]);
      const pid = (await client.tasks.get(id)).pid;
      assert.equal(fs.readFileSync(`/proc/${pid}/oom_score_adj`, "utf8").trim(), String(INIT_OOM_SCORE_ADJ));

      const hogExit = await waitFor("the hog to exit", 60_000, () => /hog exited (\d+)/.exec(fs.readFileSync(logPath, "utf8"))?.[1]);
      const log = fs.readFileSync(logPath, "utf8");
      assert.equal(hogExit, "137", log);
      assert.match(log, /holding 36 MiB/);
      assert.match(log, /hog: 16 MiB/, "the hog never got going");

      const event = await Promise.race([oomEvent, sleep(15_000).then(() => undefined)]);
      assert.equal(event?.containerId, id, "no /tasks/oom event for the container");
      assert.equal(event?.namespace, env.namespace);

      const stats = await client.cgroupStats(id);
      assert.ok(stats.memory, "no memory counters");
      assert.ok(stats.memory.oomKills >= 1, `oom kills ${stats.memory.oomKills}`);
      assert.equal(stats.memory.limitBytes, limit);
      // The same init process is alive.
      const task = await client.tasks.get(id);
      assert.equal(task.status, "running");
      assert.equal(task.pid, pid);
    } finally {
      ooms.close();
      await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
    }
  });

  test("control: with the hog at init's score, the OOM killer takes init, the bigger one", { timeout: 120_000 }, async () => {
    const id = `oom-control-${uid()}`;
    try {
      await client.createContainerFromImage({ id, image: images.busybox, specOpts: [initArgs(INIT_OOM_SCORE_ADJ), withProbe(), ...sandbox({ memoryBytes: limit })] });
      await client.createTask(id, { logPath: path.join(env.dir, "logs", `${id}.log`) });
      const waiting = client.tasks.wait(id, { timeoutMs: 60_000 });
      await client.tasks.start(id);
      assert.equal((await waiting).exitStatus, 137);
      assert.ok(((await client.cgroupStats(id)).memory?.oomKills ?? 0) >= 1);
    } finally {
      await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
    }
  });
});

test("pids limit: a fork bomb stays at the limit and the container stays killable", { timeout: 120_000 }, async () => {
  const id = `pids-${uid()}`;
  const limit = 32;
  try {
    await client.createContainerFromImage({
      id,
      image: images.busybox,
      specOpts: [withProcessArgs("sh", "-c", "bomb() { bomb | bomb & }; bomb >/dev/null 2>&1; exec sleep 100000"), ...sandbox({ pids: limit })],
    });
    // runc has made the cgroup at create: check the limit is there before the bomb goes off.
    await client.createTask(id);
    assert.equal((await client.cgroupStats(id)).pids?.limit, limit);
    await client.tasks.start(id);

    const eventsFile = path.join(cgroupDir(cgroupsPathOf(id), "pids"), "pids.events");
    const hitLimit = () => parseInt(/max (\d+)/.exec(fs.readFileSync(eventsFile, "utf8"))?.[1] ?? "0", 10);
    await waitFor("fork to fail at the limit", 20_000, () => (hitLimit() > 0 ? true : undefined));
    let highest = 0;
    const until = Date.now() + 2000;
    while (Date.now() < until) {
      const stats = await client.cgroupStats(id);
      highest = Math.max(highest, stats.pids?.current ?? 0);
      await sleep(20);
    }
    assert.ok(highest <= limit, `pids.current reached ${highest}, the limit is ${limit}`);
    assert.ok(highest >= limit / 2, `pids.current only reached ${highest}: the bomb did not run`);

    const t0 = Date.now();
    const exit = await client.tasks.stop(id, { graceMs: 500, killTimeoutMs: 15_000 });
    assert.ok(exit !== undefined);
    assert.ok(Date.now() - t0 < 20_000, `stop took ${Date.now() - t0} ms`);
    assert.equal(await client.tasks.status(id), undefined);
  } finally {
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
  }
});

test("tasks.update changes memory, swap, CPU and pids limits of a running task", { timeout: 60_000 }, async () => {
  const id = `upd-${uid()}`;
  const v1 = detectCgroupVersion() === "v1";
  const cpuQuota = () => (v1 ? readCgroupFile(id, "cpu", "cpu.cfs_quota_us") : readCgroupFile(id, "", "cpu.max").split(" ")[0]);
  const swapOf = () => (v1 ? readCgroupFile(id, "memory", "memory.memsw.limit_in_bytes") : readCgroupFile(id, "", "memory.swap.max"));
  const limitSwap = swapLimitSupported();
  try {
    await startLongRunning(id, images.busybox, [withProcessArgs("sleep", "100000"), ...sandbox({ memoryBytes: 64 * MiB, pids: 64, cpus: 1 })]);
    let stats = await client.cgroupStats(id);
    assert.equal(stats.memory?.limitBytes, 64 * MiB);
    assert.equal(stats.pids?.limit, 64);
    assert.equal(cpuQuota(), "100000");
    // v1 pins memory+swap to the limit; v2 keeps swap at 0 for the same spec.
    if (limitSwap) assert.equal(swapOf(), v1 ? String(64 * MiB) : "0");

    await client.tasks.update(id, linuxResources({ memoryBytes: 96 * MiB, pids: 40, cpus: 0.5 }, { limitSwap }));
    stats = await client.cgroupStats(id);
    assert.equal(stats.memory?.limitBytes, 96 * MiB);
    assert.equal(stats.pids?.limit, 40);
    assert.equal(cpuQuota(), "50000");
    if (limitSwap) assert.equal(swapOf(), v1 ? String(96 * MiB) : "0");

    // Only what is given changes.
    await client.tasks.update(id, linuxResources({ pids: 50 }));
    stats = await client.cgroupStats(id);
    assert.equal(stats.pids?.limit, 50);
    assert.equal(stats.memory?.limitBytes, 96 * MiB);

    // Bad input: a clear error, nothing changes.
    await assert.rejects(client.tasks.update(id, {}), (err) => err instanceof ContainerdError && err.code === "invalid_argument" && /no resources given/.test(err.message));
    await assert.rejects(client.tasks.update(id, { pids: { limit: -5 } }), (err) => err instanceof ContainerdError && err.code === "invalid_argument");
    await assert.rejects(client.tasks.update(`missing-${uid()}`, linuxResources({ pids: 10 })), (err) => err instanceof ContainerdError && err.code === "not_found");
    assert.equal((await client.cgroupStats(id)).pids?.limit, 50);
    assert.equal((await readCgroupStats(cgroupsPathOf(id))).memory?.limitBytes, 96 * MiB);
  } finally {
    await client.removeContainer(id, { graceMs: 0 }).catch(() => {});
  }
});
