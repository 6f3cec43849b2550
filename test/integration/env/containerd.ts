// A private containerd for integration tests: own config, --root, --state, gRPC and ttrpc
// sockets, all under a fresh temp dir; its own namespace; torn down completely by stop().
//
// What containerd 1.6 still puts outside the temp dir, and how it is contained:
// - shim sockets: /run/containerd/s/<sha256(address/namespace/id)> (hard-coded in 1.6; the
//   shim creates the directory, so no system containerd is needed). Named after our socket
//   path, so they never collide with the system daemon's; stop() removes any a killed shim left.
// - runc state: /run/containerd/runc/<namespace> unless the container asks otherwise;
//   container.ts passes `--runc-root <dir>/runc`.
// - cgroups: runc creates /<namespace>/<id> in every hierarchy (cgroup v1 on this VM) and
//   removes only the <id> level; stop() removes the <namespace> level.
// - ctr's exec FIFOs default to /run/containerd/fifo; container.ts passes `--fifo-dir`.
// The `opt` plugin would create /opt/containerd; the config points it into the temp dir.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CtrOptions {
  /** Throw CtrError on a nonzero exit (default true). */
  check?: boolean;
  /** Written to ctr's stdin, which is then closed. */
  input?: string | Buffer;
  /** Kill ctr after this long (default 60 s). */
  timeoutMs?: number;
}

export class CtrError extends Error {
  constructor(
    readonly args: string[],
    readonly result: CtrResult,
  ) {
    super(`ctr ${args.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim()}`);
    this.name = "CtrError";
  }
}

export interface ContainerdEnv {
  /** gRPC socket path (what `ctr -a` and MEMOH_CONTAINERD_ADDRESS take). */
  readonly address: string;
  readonly ttrpcAddress: string;
  readonly namespace: string;
  /** containerd --root (content, metadata, snapshots). */
  readonly root: string;
  /** containerd --state (task bundles, rootfs mounts). */
  readonly state: string;
  /** The temp dir holding everything; removed by stop(). */
  readonly dir: string;
  /** runc --root for containers of this env (container.ts passes it to `ctr run`). */
  readonly runcRoot: string;
  /** Where ctr puts stdio FIFOs. */
  readonly fifoDir: string;
  /** containerd's own log. */
  readonly logPath: string;
  /** Runs `ctr -a <address> -n <namespace> ...args`. */
  ctr(args: string[], options?: CtrOptions): Promise<CtrResult>;
  /** Kills every task, deletes every container, stops containerd, unmounts and removes everything. */
  stop(): Promise<void>;
  /** Stops the daemon only (SIGTERM): shims and containers keep running, as in a containerd restart. */
  daemonDown(): Promise<void>;
  /** Starts the daemon again on the same root, state and socket. */
  daemonUp(): Promise<void>;
}

export interface StartContainerdOptions {
  /** Default: a fresh `memoh-test-<hex>`. */
  namespace?: string;
  /** Parent of the temp dir; must support overlayfs. Default: $MEMOH_TEST_TMPDIR or os.tmpdir(). */
  baseDir?: string;
  startTimeoutMs?: number;
  /** TOML appended to the generated config (plugin settings a test needs). */
  extraConfig?: string;
}

// containerd, ctr, the shim and runc are found through PATH; make sure the sbin dirs are on it.
const TOOL_PATH = [...new Set([...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])]
  .filter(Boolean)
  .join(":");
const TOOL_ENV = { ...process.env, PATH: TOOL_PATH };

const CGROUP_ROOT = "/sys/fs/cgroup";
const SHIM_SOCKET_DIR = "/run/containerd/s";
// A Unix socket path must fit in sun_path (108 bytes with the NUL).
const MAX_SOCKET_PATH = 100;

export function runCommand(
  cmd: string,
  args: string[],
  options: { input?: string | Buffer; timeoutMs?: number } = {},
): Promise<CtrResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: TOOL_ENV, stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => stdout.push(c));
    child.stderr.on("data", (c: Buffer) => stderr.push(c));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 60_000);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0),
        stdout: Buffer.concat(stdout).toString(),
        stderr: Buffer.concat(stderr).toString(),
      });
    });
    child.stdin.on("error", () => {}); // the command may exit before reading its input
    child.stdin.end(options.input ?? "");
  });
}

function tail(file: string, lines = 30): string {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Fails early, with a useful message, when `dir` is on a filesystem overlayfs cannot use. */
function checkOverlayfs(dir: string): void {
  const base = path.join(dir, "overlay-check");
  const [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map((d) => path.join(base, d)) as [string, string, string, string];
  for (const d of [lower, upper, work, merged]) fs.mkdirSync(d, { recursive: true });
  const mount = spawnSync("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged], {
    env: TOOL_ENV,
    encoding: "utf8",
  });
  if (mount.status === 0) spawnSync("umount", [merged], { env: TOOL_ENV });
  fs.rmSync(base, { recursive: true, force: true });
  if (mount.status !== 0) {
    throw new Error(
      `overlayfs does not work under ${path.dirname(dir)} (${(mount.stderr || String(mount.error)).trim()}); ` +
        "set MEMOH_TEST_TMPDIR to a directory on ext4 or xfs",
    );
  }
}

function configToml(dir: string): string {
  const q = (s: string) => JSON.stringify(s);
  return `version = 2
root = ${q(path.join(dir, "root"))}
state = ${q(path.join(dir, "state"))}
# CRI is not used (no kubelet); the btrfs/zfs/devmapper/aufs snapshotters only probe the host
# (aufs runs modprobe) and log errors. overlayfs is the default snapshotter.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = ${q(path.join(dir, "containerd.sock"))}

[ttrpc]
  address = ${q(path.join(dir, "containerd.sock.ttrpc"))}

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(path.join(dir, "opt"))}
`;
}

export async function startContainerd(options: StartContainerdOptions = {}): Promise<ContainerdEnv> {
  if (process.getuid?.() !== 0) throw new Error("startContainerd: needs root (containerd, runc and overlay mounts)");
  const baseDir = options.baseDir ?? process.env.MEMOH_TEST_TMPDIR ?? os.tmpdir();
  const namespace = options.namespace ?? `memoh-test-${randomBytes(4).toString("hex")}`;
  const dir = fs.mkdtempSync(path.join(baseDir, "memoh-ctd-"));
  const address = path.join(dir, "containerd.sock");
  const env: ContainerdEnv = {
    address,
    ttrpcAddress: `${address}.ttrpc`,
    namespace,
    root: path.join(dir, "root"),
    state: path.join(dir, "state"),
    dir,
    runcRoot: path.join(dir, "runc"),
    fifoDir: path.join(dir, "fifo"),
    logPath: path.join(dir, "containerd.log"),
    ctr: async (args, ctrOptions = {}) => {
      const full = ["-a", address, "-n", namespace, ...args];
      const result = await runCommand("ctr", full, ctrOptions);
      if (result.code !== 0 && ctrOptions.check !== false) throw new CtrError(args, result);
      return result;
    },
    stop: () => stopContainerd(env, child),
    daemonDown: async () => {
      if (child && child.exitCode === null && child.signalCode === null) await terminate(child);
    },
    daemonUp: async () => {
      if (child && child.exitCode === null && child.signalCode === null) return;
      child = await launch();
    },
  };

  const configPath = path.join(dir, "config.toml");
  const launch = async (): Promise<ChildProcess> => {
    const logFd = fs.openSync(env.logPath, "a");
    const proc = spawn("containerd", ["--config", configPath], { env: TOOL_ENV, stdio: ["ignore", logFd, logFd] });
    fs.closeSync(logFd);
    // The test process must be able to exit even if a test forgets stop(); exitGuard kills the daemon then.
    proc.unref();
    exitGuards.set(dir, proc);

    let exited: string | undefined;
    proc.once("exit", (code, signal) => (exited = `containerd exited (${signal ?? code})`));
    proc.once("error", (err) => (exited = `cannot start containerd: ${err.message}`));
    const deadline = Date.now() + (options.startTimeoutMs ?? 10_000);
    try {
      for (;;) {
        if (exited !== undefined) throw new Error(exited);
        const probe = await runCommand("ctr", ["-a", address, "version"], { timeoutMs: 5_000 });
        if (probe.code === 0) break;
        if (Date.now() > deadline) throw new Error(`containerd did not answer on ${address}: ${probe.stderr.trim()}`);
        await sleep(50);
      }
    } catch (err) {
      await terminate(proc);
      exitGuards.delete(dir);
      throw err;
    }
    return proc;
  };

  let child: ChildProcess | undefined;
  try {
    if (env.ttrpcAddress.length > MAX_SOCKET_PATH) throw new Error(`socket path too long: ${env.ttrpcAddress}`);
    checkOverlayfs(dir);
    fs.mkdirSync(env.fifoDir);
    fs.writeFileSync(configPath, configToml(dir) + (options.extraConfig ?? ""));
    child = await launch();
    return env;
  } catch (err) {
    const message = `${err instanceof Error ? err.message : String(err)}\n--- ${env.logPath} (tail) ---\n${tail(env.logPath)}`;
    await stopContainerd(env, child).catch(() => {});
    throw new Error(`startContainerd: ${message}`);
  }
}

const exitGuards = new Map<string, ChildProcess>();
process.once("exit", () => {
  for (const [dir, child] of exitGuards) {
    child.kill("SIGKILL");
    process.stderr.write(`containerd env ${dir} was not stopped; killed its daemon, left its files\n`);
  }
});

interface TaskRow {
  id: string;
  pid: number;
  status: string;
}

export async function listTasks(env: ContainerdEnv): Promise<TaskRow[]> {
  const { stdout } = await env.ctr(["tasks", "ls"]);
  return stdout
    .split("\n")
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3)
    .map(([id, pid, status]) => ({ id: id!, pid: Number(pid), status: status! }));
}

async function stopContainerd(env: ContainerdEnv, child: ChildProcess | undefined): Promise<void> {
  const errors: string[] = [];
  const note = (what: string, err: unknown) => errors.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
  let containerIds: string[] = [];

  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      for (const task of await listTasks(env)) {
        // --force kills with SIGKILL and waits for the exit before deleting.
        const r = await env.ctr(["tasks", "delete", "--force", task.id], { check: false });
        if (r.code !== 0) note(`delete task ${task.id}`, r.stderr.trim());
      }
      containerIds = (await env.ctr(["containers", "ls", "-q"])).stdout.split("\n").filter(Boolean);
      for (const id of containerIds) {
        const r = await env.ctr(["containers", "delete", id], { check: false });
        if (r.code !== 0) note(`delete container ${id}`, r.stderr.trim());
      }
    } catch (err) {
      note("cleaning up tasks", err);
    }
    await terminate(child);
  }
  exitGuards.delete(env.dir);

  // Whatever survived the daemon: shims still serving our address, processes in our cgroups.
  killShims(env.address);
  killCgroupProcesses(env.namespace);
  // Task bundle dirs name the tasks even when the daemon died before it could list them.
  const bundleDir = path.join(env.state, "io.containerd.runtime.v2.task", env.namespace);
  const taskIds = fs.existsSync(bundleDir) ? fs.readdirSync(bundleDir) : [];
  for (const id of new Set([...containerIds, ...taskIds])) {
    const socket = path.join(SHIM_SOCKET_DIR, createHash("sha256").update(path.join(env.address, env.namespace, id)).digest("hex"));
    fs.rmSync(socket, { force: true });
  }
  try {
    unmountUnder(env.dir);
  } catch (err) {
    note("unmounting", err);
  }
  await removeCgroups(env.namespace);
  try {
    fs.rmSync(env.dir, { recursive: true, force: true });
  } catch (err) {
    note(`removing ${env.dir}`, err);
  }
  if (errors.length > 0) throw new Error(`containerd env cleanup: ${errors.join("; ")}`);
}

async function terminate(child: ChildProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = new AbortController();
  const timeout = sleep(5_000, "timeout" as const, { signal: timer.signal }).catch(() => undefined);
  const first = await Promise.race([exited, timeout]);
  timer.abort();
  if (first === "timeout") {
    child.kill("SIGKILL");
    await exited;
  }
}

function killShims(address: string): void {
  for (const pid of fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    const i = argv.indexOf("-address");
    if (i >= 0 && argv[i + 1] === address && path.basename(argv[0] ?? "").startsWith("containerd-shim")) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

/** /sys/fs/cgroup/<ns> (cgroup v2) and /sys/fs/cgroup/<controller>/<ns> (v1) that exist. */
function namespaceCgroups(namespace: string): string[] {
  const candidates = [path.join(CGROUP_ROOT, namespace)];
  try {
    for (const h of fs.readdirSync(CGROUP_ROOT)) candidates.push(path.join(CGROUP_ROOT, h, namespace));
  } catch {
    return [];
  }
  return candidates.filter((c) => fs.existsSync(path.join(c, "cgroup.procs")));
}

function subCgroups(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...subCgroups(path.join(dir, e.name)), path.join(dir, e.name));
  }
  return out;
}

function killCgroupProcesses(namespace: string): void {
  for (const cg of namespaceCgroups(namespace)) {
    for (const d of [...subCgroups(cg), cg]) {
      let pids: string[] = [];
      try {
        pids = fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").split("\n").filter(Boolean);
      } catch {
        continue;
      }
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
  }
}

async function removeCgroups(namespace: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const left = namespaceCgroups(namespace);
    if (left.length === 0) return;
    for (const cg of left) {
      for (const d of [...subCgroups(cg), cg]) {
        try {
          fs.rmdirSync(d);
        } catch {
          // busy until the killed processes are reaped; retried below
        }
      }
    }
    await sleep(50);
  }
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => m !== undefined)
    .map(unescape)
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function unmountUnder(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) return;
    for (const m of mounts) spawnSync("umount", ["-R", "-l", m], { env: TOOL_ENV });
  }
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`still mounted: ${left.join(", ")}`);
}
