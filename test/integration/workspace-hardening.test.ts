// Workspaces against real daemons under what users' images and workloads bring: any
// image config, a root inside that plants links, fork bombs and memory hogs, calls the
// sandbox refuses, task logs that grow, lifecycle histories that get long, a socket dir
// written full.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { WorkspaceError } from "../../host/workspace/errors.js";
import { JobStream } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { WorkspaceManager } from "../../host/workspace/manager.js";
import { buildTestImages, deriveImage, writeOciLayout, type LayerEntry } from "../../scripts/image-builder.js";
import { WorkspaceSupervisor, type SupervisorEvent } from "../../host/workspace/supervisor.js";
import { SOCKET_DIR_BYTES, SOCKET_DIR_INODES } from "../../host/workspace/socket-dir.js";
import { mountPoints } from "../../host/containerd/snapshots.js";
import { startWorkspaceFixture, waitFor, type WorkspaceFixture } from "./env/workspace.js";

const MIB = 1024 * 1024;

let fx: WorkspaceFixture;
let mgr: WorkspaceManager;

before(async () => {
  fx = await startWorkspaceFixture();
  mgr = fx.manager();
});

after(async () => {
  await fx?.close();
});

test("maintenance caps a task log that grew and prunes lifecycle events to the newest N", async () => {
  const bot = fx.botName("logs");
  const ws = await mgr.ensure(bot);
  const log = path.join(fx.dataRoot, "logs", `${ws.containerId}.log`);
  assert.ok(fs.existsSync(log), "the task has no log file");
  // What a chatty workspace leaves behind: 64 KiB of old output.
  fs.appendFileSync(log, "old output line\n".repeat(4096));
  for (let i = 0; i < 30; i++) await fx.store.recordEvent(ws.containerId, "test_event", { i });
  const report = await mgr.maintain({ taskLogMaxBytes: 16 * 1024, taskLogKeep: 1, eventsKeep: 10 });
  assert.deepEqual(report.errors, []);
  assert.ok(report.logsRotated.includes(log), JSON.stringify(report));
  assert.ok(fs.statSync(log).size < 16 * 1024, "the log was not truncated");
  assert.match(fs.readFileSync(`${log}.1`, "utf8"), /old output line/);
  assert.equal(fs.existsSync(`${log}.2`), false, "more rotated copies than asked for");
  assert.ok(report.eventsPruned >= 20, `pruned ${report.eventsPruned}`);
  assert.equal((await fx.store.listEvents(ws.containerId, 100)).length, 10);
  await mgr.delete(bot);
});

/** Images as users bring them: a USER by name with /etc/passwd, a bare uid:gid without one, their own PATH, an ENV that would break a node. */
async function importUserImages(): Promise<{ named: string; numeric: string }> {
  const base = (await buildTestImages()).busybox.image;
  const hostileEnv = ["NODE_OPTIONS=--require /nonexistent", "LD_PRELOAD=/nonexistent.so", "LD_LIBRARY_PATH=/nonexistent", "NODE_PATH=/nonexistent", "FOO=bar"];
  const file = (p: string, text: string, mode = 0o644): LayerEntry => ({ path: p, type: "file", mode, data: Buffer.from(text) });
  const dir = (p: string): LayerEntry => ({ path: p, type: "dir", mode: 0o755 });
  const named = await deriveImage(
    base,
    "memoh.test/user-named:latest",
    [
      file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n"),
      file("etc/group", "root:x:0:\nnode:x:1000:\n"),
      dir("home"),
      dir("home/node"),
      dir("custom"),
      dir("custom/bin"),
      file("custom/bin/hello", "#!/bin/sh\necho hello from the image path\n", 0o755),
    ],
    { user: "node", workingDir: "/home/node", entrypoint: ["/bin/false"], cmd: ["never"], env: ["PATH=/custom/bin:/usr/bin:/bin", ...hostileEnv] },
  );
  const numeric = await deriveImage(base, "memoh.test/user-numeric:latest", [], {
    user: "65532:65532",
    workingDir: "/does/not/exist",
    cmd: ["/bin/false"],
    env: [`PATH=/usr/bin:/bin`, ...hostileEnv],
  });
  const tar = path.join(fx.dataRoot, "user-images.oci.tar");
  await writeOciLayout([named, numeric], tar);
  await fx.env.ctr(["images", "import", "--all-platforms", tar]);
  return { named: named.ref, numeric: numeric.ref };
}

test("images with USER (a name, or a uid:gid without a passwd entry), WORKDIR, ENTRYPOINT/CMD and a hostile ENV start and serve; the agent keeps its own environment", async () => {
  const images = await importUserImages();
  for (const image of [images.named, images.numeric]) {
    const bot = fx.botName("img");
    const ws = await mgr.ensure(bot, { image });
    assert.equal(ws.task, "running", image);
    const info = await mgr.call(bot, (c) => c.info());
    assert.equal(info.workspaceId, ws.containerId);
    // Commands run as root by default, with the image's environment and its PATH first.
    const id = await mgr.call(bot, (c) => c.exec({ command: "id -u; id -g; echo \"$FOO|$NODE_OPTIONS\"; echo \"$PATH\"" }));
    assert.equal(id.code, 0, id.stderr.toString());
    const [uid, gid, vars, pathVar] = id.stdout.toString().split("\n");
    assert.equal(uid, "0", image);
    assert.equal(gid, "0", image);
    assert.equal(vars, "bar|--require /nonexistent");
    assert.match(pathVar!, /^\/(custom\/bin|usr\/bin):/, `the image's PATH does not come first: ${pathVar}`);
    assert.match(pathVar!, /\/opt\/memoh\/toolkit\/bin$/, "the toolkit is not on the PATH");
    // The agent's own node got none of it.
    const environ = await mgr.call(bot, (c) => c.readFile({ path: `/proc/${info.pid}/environ` }));
    const agentEnv = environ.content.split("\0");
    for (const name of ["NODE_OPTIONS", "LD_PRELOAD", "LD_LIBRARY_PATH", "NODE_PATH", "FOO"]) {
      assert.ok(!agentEnv.some((e) => e.startsWith(`${name}=`)), `${name} reached the agent: ${agentEnv.join(" ")}`);
    }
    const status = await fx.cd.containers.get(ws.containerId);
    assert.deepEqual(status.spec?.process.user, { uid: 0, gid: 0 }, "the agent does not run as root");
    await mgr.delete(bot);
  }
  const bot = fx.botName("named");
  await mgr.ensure(bot, { image: images.named });
  const hello = await mgr.call(bot, (c) => c.exec({ command: "hello" }));
  assert.equal(hello.stdout.toString(), "hello from the image path\n");
  const asNode = await mgr.call(bot, (c) => c.exec({ command: "id -u; id -g; echo $HOME", user: "node" }));
  assert.equal(asNode.stdout.toString(), "1000\n1000\n/home/node\n");
  const asUid = await mgr.call(bot, (c) => c.exec({ command: "id -u; id -g", user: "65532:65532" }));
  assert.equal(asUid.stdout.toString(), "65532\n65532\n");
  await assert.rejects(mgr.call(bot, (c) => c.exec({ command: "true", user: "nobody-here" })), (err: unknown) => {
    assert.ok(err instanceof WorkspaceError, String(err));
    assert.equal(err.code, "invalid_argument");
    assert.match(err.message, /nobody-here/);
    return true;
  });
  await mgr.delete(bot);
});

test("a link from one workspace's socket to another's, planted by root inside the first while calls run, reaches nothing of the second", async () => {
  const a = fx.botName("ten-a");
  const b = fx.botName("ten-b");
  const wa = await mgr.ensure(a);
  const wb = await mgr.ensure(b);
  const bAgent = (await mgr.call(b, (c) => c.info())).pid;
  const bSocket = path.join(fx.dataRoot, "run", b, "bridge.sock");
  const answeredBy = new Set<string>();
  let calls = 0;
  let stop = false;
  const loop = (async () => {
    for (let i = 0; !stop; i++) {
      try {
        answeredBy.add((await mgr.call(a, (c) => c.info())).workspaceId);
        await mgr.call(a, (c) => c.writeFile(`from-a/${i}`, "written for a"));
        calls++;
      } catch {
        // A's agent is restarted when its socket turns out to be a link: calls fail meanwhile.
        await sleep(20);
      }
    }
  })();
  try {
    for (let round = 0; round < 3; round++) {
      const before = calls;
      await waitFor("calls of A succeeding", () => (calls >= before + 3 ? true : undefined));
      // Root inside A swaps its socket for a link to B's socket (a host path), then its
      // connection is dropped so that the next call dials again.
      await mgr
        .call(a, (c) => c.exec({ command: `rm -f /run/memoh/bridge.sock && ln -s ${bSocket} /run/memoh/bridge.sock` }))
        .catch(() => undefined);
      assert.equal(fs.lstatSync(path.join(fx.dataRoot, "run", a, "bridge.sock")).isSymbolicLink(), true, "the link is not in place");
      mgr.bridges.evict(a);
    }
    const before = calls;
    await waitFor("calls of A succeeding again", () => (calls >= before + 3 ? true : undefined));
  } finally {
    stop = true;
    await loop;
  }
  assert.deepEqual([...answeredBy], [wa.containerId], "a call for A was answered by another agent");
  await assert.rejects(mgr.call(b, (c) => c.stat("from-a")), (err: unknown) => err instanceof WorkspaceError && err.code === "not_found");
  assert.equal((await mgr.call(b, (c) => c.info())).pid, bAgent, "B's agent was disturbed");
  assert.equal((await mgr.status(b)).pid, wb.pid);
  // Deleting A removes its socket dir without following links planted there to B's.
  await mgr.call(a, (c) => c.exec({ command: `ln -s ${path.dirname(bSocket)} /run/memoh/b-dir && ln -s ${bSocket} /run/memoh/b-sock` }));
  await mgr.delete(a);
  assert.equal(fs.existsSync(path.join(fx.dataRoot, "run", a)), false);
  assert.equal(fs.lstatSync(bSocket).isSocket(), true, "B's socket went with A's socket dir");
  assert.equal((await mgr.call(b, (c) => c.info())).pid, bAgent);
  await mgr.delete(b);
});

test("a fork bomb and a memory hog stay inside their workspace: another workspace keeps serving, the agent survives and answers, the status shows the limits and the OOM kill", async () => {
  const events: SupervisorEvent[] = [];
  const sup = new WorkspaceSupervisor(mgr, fx.cd.conn, { probeIntervalMs: 0, onEvent: (e) => events.push(e) });
  sup.start();
  await sup.ready;
  const hog = fx.botName("hog");
  const calm = fx.botName("calm");
  try {
    await mgr.ensure(hog, { limits: { memoryBytes: 192 * MIB, pids: 128, cpus: 1 } });
    await mgr.ensure(calm);
    const agent = (await mgr.call(hog, (c) => c.info())).pid;
    const latencies: number[] = [];
    const failures: string[] = [];
    let stop = false;
    const neighbour = (async () => {
      while (!stop) {
        const t0 = Date.now();
        try {
          const r = await mgr.call(calm, (c) => c.exec({ command: "echo ok" }, { timeoutMs: 10_000 }));
          if (r.stdout.toString() !== "ok\n") failures.push(`unexpected output ${JSON.stringify(r.stdout.toString())}`);
          latencies.push(Date.now() - t0);
        } catch (err) {
          failures.push(String(err));
        }
        await sleep(50);
      }
    })();
    try {
      // The memory hog (the toolkit's node, allocating until the kernel stops it).
      const oom = await mgr.call(hog, (c) => c.exec({ argv: ["/opt/memoh/toolkit/bin/node", "-e", "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));"] }, { timeoutMs: 60_000 }));
      assert.equal(oom.code, 137, `the hog was not OOM-killed: ${oom.code} ${oom.stderr.toString().slice(-300)}`);
      // The fork bomb, until its timeout kills the whole process group.
      const bomb = await mgr.call(hog, (c) => c.exec({ command: "bomb() { bomb | bomb & }; bomb; sleep 30", timeoutMs: 5_000 }, { timeoutMs: 60_000 }));
      assert.equal(bomb.timedOut, true);
    } finally {
      stop = true;
      await neighbour;
    }
    assert.deepEqual(failures, [], "the other workspace's calls failed");
    assert.ok(latencies.length >= 10, `only ${latencies.length} calls of the other workspace completed`);
    // The agent of the hog's workspace survived both and answers.
    const after = await mgr.call(hog, (c) => c.info());
    assert.equal(after.pid, agent, "the agent itself was killed");
    const echo = await mgr.call(hog, (c) => c.exec({ command: "echo alive" }));
    assert.equal(echo.stdout.toString(), "alive\n");
    const status = await waitFor("the OOM kill on the row", async () => {
      const s = await mgr.status(hog);
      return s.oomKills >= 1 ? s : undefined;
    });
    assert.deepEqual(status.limits, { memoryBytes: 192 * MIB, cpus: 1, pids: 128 });
    assert.ok((status.cgroup?.memory?.oomKills ?? 0) >= 1, JSON.stringify(status.cgroup));
    assert.ok(status.lastOomAt instanceof Date);
    assert.ok(events.some((e) => e.type === "oom"), JSON.stringify(events));
    assert.equal((await mgr.status(hog)).task, "running");
  } finally {
    await sup.close();
  }
  await mgr.delete(hog);
  await mgr.delete(calm);
});

test("the sandbox refuses namespaces, mounts and keyrings inside a workspace, while the toolkit's node, npm, pipelines and file work run", async () => {
  const probeDir = path.join(fx.dataRoot, "probe");
  fs.mkdirSync(probeDir, { recursive: true });
  execFileSync("gcc", ["-static", "-O1", "-o", path.join(probeDir, "probe"), path.join(path.dirname(fileURLToPath(import.meta.url)), "sandbox-probe.c")], { stdio: "pipe" });
  const bot = fx.botName("sandbox");
  await mgr.ensure(bot);
  await mgr.call(bot, (c) => c.writeFile("probe", fs.readFileSync(path.join(probeDir, "probe")), 0o755));
  const probed = await mgr.call(bot, (c) => c.exec({ argv: ["/data/probe", "syscalls"] }));
  const errnoOf = new Map(probed.stdout.toString().trim().split("\n").map((l) => l.split(" ") as [string, string]));
  for (const call of ["unshare_user", "mount", "keyctl", "bpf", "perf_event_open", "init_module"]) {
    assert.equal(errnoOf.get(call), "1", `${call} was not refused with EPERM: ${probed.stdout.toString()}`);
  }
  assert.equal(errnoOf.get("raw_socket"), "1", "a raw socket opened without CAP_NET_RAW");
  assert.equal(errnoOf.get("icmp_echo_dgram"), "0", "ping through an ICMP datagram socket does not work");
  const unshare = await mgr.call(bot, (c) => c.exec({ command: "unshare -U true" }));
  assert.notEqual(unshare.code, 0, "unshare -U ran");
  const mount = await mgr.call(bot, (c) => c.exec({ command: "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m" }));
  assert.notEqual(mount.code, 0, "mount ran");
  const work = await mgr.call(bot, (c) =>
    c.exec(
      {
        command:
          "set -e; echo abc | tr a-c x-z; mkdir -p /data/w && cd /data/w && echo hi > f && cp f g && cat g; " +
          "node -e \"const { Worker } = require('node:worker_threads'); new Worker('process.exit(0)', { eval: true }).on('exit', () => console.log('worker ok'))\"; " +
          "mkdir -p /data/lib /data/app && cd /data/lib && npm init -y >/dev/null && npm pack --silent >/dev/null && " +
          "cd /data/app && npm init -y >/dev/null && npm install --offline --no-audit --no-fund ../lib/lib-1.0.0.tgz >/dev/null && node -e \"console.log(require('lib/package.json').name)\"",
        env: { HOME: "/data" },
      },
      { timeoutMs: 120_000 },
    ),
  );
  assert.equal(work.code, 0, work.stderr.toString());
  assert.equal(work.stdout.toString(), "xyz\nhi\nworker ok\nlib\n");
  await mgr.delete(bot);
});

/** Waits (at most 4 s) until the agent has raised this shell's score: a child forked then inherits it. */
const AFTER_AGENT_SCORE = 'i=0; while [ "$(cat /proc/self/oom_score_adj)" = 0 ] && [ $i -lt 200 ]; do sleep 0.02; i=$((i+1)); done; ';

test("nothing in a workspace lowers its OOM score below the agent's 0, spawned processes run at 500; host side channels (powercap, interrupts) read empty", async () => {
  const bot = fx.botName("oomfloor");
  const ws = await mgr.ensure(bot);
  const spec = (await fx.cd.containers.get(ws.containerId)).spec;
  assert.equal(spec?.process.oomScoreAdj, 0);
  const agentPid = (await mgr.call(bot, (c) => c.info())).pid;
  const score = await mgr.call(bot, (c) => c.exec({ command: `${AFTER_AGENT_SCORE}cat /proc/${agentPid}/oom_score_adj /proc/self/oom_score_adj` }));
  assert.equal(score.stdout.toString(), "0\n500\n", score.stderr.toString());
  // As root (no CAP_SYS_RESOURCE) and as another user: back down to the agent's 0 is
  // allowed, below it is EACCES, whatever the value; a job runs the same way. Each
  // command first waits until its shell has the score: the agent writes 500 just after
  // the spawn, and a shell that is quicker would see (and overwrite) the value before it.
  for (const user of ["", "65534"]) {
    const lower = await mgr.call(bot, (c) =>
      c.exec({ command: `${AFTER_AGENT_SCORE}for v in -998 -1000 -1; do echo $v > /proc/self/oom_score_adj && echo lowered $v; done; echo 0 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj`, user }),
    );
    assert.equal(lower.stdout.toString(), "0\n", `user ${user || "root"}: ${lower.stdout.toString()} ${lower.stderr.toString()}`);
    assert.equal(lower.stderr.toString().match(/Permission denied/g)?.length, 3, lower.stderr.toString());
  }
  const job = await mgr.call(bot, (c) => c.startJob({ command: `${AFTER_AGENT_SCORE}cat /proc/self/oom_score_adj; echo -998 > /proc/self/oom_score_adj` }));
  const waited = await mgr.call(bot, (c) => c.waitJob(job.id, 10_000));
  assert.equal(waited.job.exitCode, 1);
  const jobOut = await mgr.call(bot, (c) => c.readJobOutput({ id: job.id, stream: JobStream.STDOUT }));
  assert.equal(Buffer.from(jobOut.data).toString(), "500\n");

  // Masked: a file reads as /dev/null, a directory lists as an empty tmpfs. What the
  // host lacks (powercap and thermal_throttle on many VMs) is checked where it exists.
  const masked = spec?.linux.maskedPaths ?? [];
  for (const p of ["/sys/devices/virtual/powercap", "/proc/interrupts"]) assert.ok(masked.includes(p), `${p} not masked`);
  assert.ok(fs.readFileSync("/proc/interrupts").length > 0, "the host's /proc/interrupts is empty: nothing to compare with");
  for (const p of masked.filter((p) => fs.existsSync(p) && (p.startsWith("/sys/devices/") || p === "/proc/interrupts"))) {
    const dir = fs.statSync(p).isDirectory();
    const r = await mgr.call(bot, (c) => c.exec({ command: dir ? `ls -A ${p} | wc -l` : `wc -c < ${p}` }));
    assert.equal(r.stdout.toString().trim(), "0", `${p} inside the workspace: ${r.stdout.toString()} ${r.stderr.toString()}`);
  }
  await mgr.delete(bot);
});

test("a workspace whose stored spec has an earlier version's sandbox runs with this version's after a restart: OOM floor, children's score, masks; rewritten once", async () => {
  const bot = fx.botName("oldspec");
  const ws = await mgr.ensure(bot);
  await mgr.stop(bot);
  // What an earlier version stored: the agent at -998 (the floor of everything in the
  // workspace), its children at 0, /proc/interrupts not masked.
  const old = structuredClone((await fx.cd.containers.get(ws.containerId)).spec!);
  old.process.oomScoreAdj = -998;
  old.process.env = old.process.env.map((e) => (e.startsWith("BRIDGE_CHILD_OOM_SCORE_ADJ=") ? "BRIDGE_CHILD_OOM_SCORE_ADJ=0" : e));
  old.linux.maskedPaths = old.linux.maskedPaths.filter((p) => p !== "/proc/interrupts");
  await fx.cd.containers.update(ws.containerId, { spec: old });

  await mgr.start(bot);
  const spec = (await fx.cd.containers.get(ws.containerId)).spec!;
  assert.equal(spec.process.oomScoreAdj, 0);
  assert.ok(spec.linux.maskedPaths.includes("/proc/interrupts"));
  const agentPid = (await mgr.call(bot, (c) => c.info())).pid;
  const score = await mgr.call(bot, (c) => c.exec({ command: `${AFTER_AGENT_SCORE}cat /proc/${agentPid}/oom_score_adj /proc/self/oom_score_adj; echo -998 > /proc/self/oom_score_adj || echo refused` }));
  assert.equal(score.stdout.toString(), "0\n500\nrefused\n", score.stderr.toString());
  const interrupts = await mgr.call(bot, (c) => c.exec({ command: "wc -c < /proc/interrupts" }));
  assert.equal(interrupts.stdout.toString().trim(), "0");
  const refreshed = async () => (await fx.store.listEvents(ws.containerId, 100)).filter((e) => e.eventType === "spec_refreshed").length;
  assert.equal(await refreshed(), 1);

  // A spec that is current is not rewritten again.
  await mgr.stop(bot);
  await mgr.start(bot);
  assert.equal(await refreshed(), 1);
  await mgr.delete(bot);
});

test("what a workspace writes in /run/memoh fills a small tmpfs of its own, not the data root's file system; a restart gets a fresh one, delete removes it", async () => {
  const bot = fx.botName("sockfill");
  await mgr.ensure(bot);
  const dir = mgr.socketDir(bot);
  const TMPFS_MAGIC = 0x01021994;
  assert.equal(fs.statfsSync(dir).type, TMPFS_MAGIC, "the socket dir is not a tmpfs");
  const fill = await mgr.call(bot, (c) => c.exec({ command: "dd if=/dev/zero of=/run/memoh/fill bs=64k count=1024; echo rc=$?" }));
  const out = fill.stdout.toString() + fill.stderr.toString();
  assert.match(out, /No space left on device/, out);
  assert.ok(fs.statSync(path.join(dir, "fill")).size <= SOCKET_DIR_BYTES, `${fs.statSync(path.join(dir, "fill")).size} bytes landed on the host`);
  // A second name of the socket holds its inode when the next start removes bridge.sock.
  const files = await mgr.call(bot, (c) => c.exec({ command: "rm /run/memoh/fill; ln /run/memoh/bridge.sock /run/memoh/held; i=0; while [ $i -lt 500 ]; do i=$((i+1)); touch /run/memoh/f$i 2>/dev/null || { echo stopped at $i; break; }; done" }));
  const stopped = Number(/stopped at (\d+)/.exec(files.stdout.toString())?.[1]);
  assert.ok(stopped > 1 && stopped <= SOCKET_DIR_INODES, files.stdout.toString());
  // The agent still answers on its socket.
  assert.equal((await mgr.call(bot, (c) => c.exec({ command: "echo still" }))).stdout.toString(), "still\n");

  // A restart gets a fresh tmpfs: what the last task left there cannot keep the agent from its socket.
  await mgr.stop(bot);
  await mgr.start(bot);
  assert.equal(mountPoints().filter((m) => m === path.resolve(dir)).length, 1, "the restart stacked a second mount");
  assert.equal((await mgr.call(bot, (c) => c.exec({ command: "ls -A /run/memoh" }))).stdout.toString(), "bridge.sock\n");
  await mgr.delete(bot);
  assert.equal(mountPoints().some((m) => m === path.resolve(dir)), false, "the tmpfs outlived its workspace");
  assert.equal(fs.existsSync(dir), false);
});
