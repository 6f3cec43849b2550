// Smoke test of the integration environment: a private containerd, the two test images, and
// the runtime bundle running in each of them under tini.
// Needs root and a built bundle: `npx tsx scripts/build-runtime.ts`, then
// `node --import tsx --test test/integration/env.test.ts`.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { DEFAULT_RUNTIME_DIR, requireRuntimeBundle, runContainer, waitForSocket, type RunningContainer } from "./env/container.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { importTestImages, type TestImageName } from "./env/images.js";

const hostNpmVersion = (
  JSON.parse(fs.readFileSync("/usr/lib/node_modules/npm/package.json", "utf8")) as { version: string }
).version;

describe("integration environment", () => {
  let env: ContainerdEnv | undefined;
  let refs: Record<TestImageName, string>;
  let stopped = false;

  before(async () => {
    requireRuntimeBundle();
    env = await startContainerd();
    refs = await importTestImages(env);
  });

  after(async () => {
    if (env !== undefined && !stopped) await env.stop();
  });

  async function withContainer(image: TestImageName, fn: (c: RunningContainer) => Promise<void>): Promise<void> {
    const c = await runContainer(env!, { id: `smoke-${image}`, image: refs[image] });
    try {
      await waitForSocket(c.socketPath, 10_000).catch((err: unknown) => {
        throw new Error(`${String(err)}\ncontainer output:\n${c.logs()}`);
      });
      await fn(c);
    } finally {
      await c.stop();
    }
  }

  async function execOk(c: RunningContainer, argv: string[]): Promise<string> {
    const r = await c.exec(argv);
    assert.equal(r.code, 0, `${argv.join(" ")} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  }

  test("busybox image: bundled node and node-pty run, the agent serves its socket", async () => {
    await withContainer("busybox", async (c) => {
      assert.equal((await execOk(c, ["/opt/memoh/bin/node", "-e", "console.log(process.version)"])).trim(), process.version);
      assert.equal((await execOk(c, ["/bin/sh", "-c", "echo $((6 * 7))"])).trim(), "42");

      // pty.node is loaded through the bundle's own libc/libstdc++, in an image that has neither.
      const ptyScript = `
        const pty = require("/opt/memoh/node_modules/node-pty");
        const p = pty.spawn("/bin/sh", ["-c", "tty; echo pty-ok"], { cols: 80, rows: 24 });
        let out = "";
        p.onData((d) => (out += d));
        p.onExit((e) => console.log(JSON.stringify({ out, exitCode: e.exitCode })));`;
      const pty = JSON.parse(await execOk(c, ["/opt/memoh/bin/node", "-e", ptyScript])) as { out: string; exitCode: number };
      assert.equal(pty.exitCode, 0);
      assert.match(pty.out, /\/dev\/pts\/\d+/);
      assert.match(pty.out, /pty-ok/);

      assert.equal((await execOk(c, ["/opt/memoh/toolkit/bin/npm", "--version"])).trim(), hostNpmVersion);
    });
  });

  test("glibc image: bundled node runs next to the image's own glibc programs", async () => {
    await withContainer("glibc", async (c) => {
      assert.equal((await execOk(c, ["/opt/memoh/bin/node", "-e", "console.log(process.version)"])).trim(), process.version);
      // process.execPath must stay a working node (children of the agent reuse it).
      const child = await execOk(c, [
        "/opt/memoh/bin/node",
        "-e",
        "console.log(require('child_process').execFileSync(process.execPath, ['-p', 'process.version']).toString().trim())",
      ]);
      assert.equal(child.trim(), process.version);
      // The image's own dynamically linked programs work (bash as /bin/sh, procps ps).
      const ps = await execOk(c, ["/bin/sh", "-c", "ps -o pid,comm -p 1 | tail -n 1"]);
      assert.match(ps, /^\s*1\s+tini/);
    });
  });

  test("stop() leaves no daemon, mounts, cgroups or files behind", async () => {
    const e = env!;
    await e.stop();
    stopped = true;
    assert.equal(fs.existsSync(e.dir), false, `${e.dir} still exists`);
    const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8");
    assert.equal(mounts.includes(e.dir), false, "mounts left under the env dir");
    const cgroups = fs.readdirSync("/sys/fs/cgroup").filter((h) => fs.existsSync(path.join("/sys/fs/cgroup", h, e.namespace)));
    assert.deepEqual(cgroups, [], "cgroups left behind");
    const procs = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
    assert.equal(procs.includes(e.address), false, "a process still refers to the env's socket");
  });

  test("the runtime bundle was built from this checkout", () => {
    const contract = JSON.parse(fs.readFileSync(path.join(DEFAULT_RUNTIME_DIR, "workspace-contract.json"), "utf8")) as {
      nodeVersion: string;
      protocolVersion: number;
    };
    assert.equal(contract.nodeVersion, process.version);
    assert.equal(contract.protocolVersion, 1);
  });
});
