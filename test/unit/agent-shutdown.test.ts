// SIGTERM: the agent stops accepting calls, lets in-flight calls finish within
// its grace period, then kills the process groups it started and exits 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BridgeClient } from "../../host/bridge/client.js";

const repo = path.resolve(import.meta.dirname, "../..");

/** Running, not merely a zombie waiting for the host's PID 1 to reap it. */
async function alive(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
}

test("SIGTERM drains in-flight calls, kills what outlives the grace period, exits 0", async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-shutdown-"));
  const socketPath = path.join(root, "bridge.sock");
  const agent = spawn(process.execPath, ["--import", "tsx", path.join(repo, "agent/main.ts")], {
    cwd: repo,
    env: { ...process.env, BRIDGE_SOCKET_PATH: socketPath, BRIDGE_DATA_DIR: path.join(root, "data"), BRIDGE_SHUTDOWN_GRACE_MS: "1500" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => agent.on("exit", (code) => resolve(code)));
  const client = new BridgeClient(`unix:${socketPath}`);
  try {
    for (let i = 0; i < 100 && !(await fs.stat(socketPath).then(() => true, () => false)); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    await client.waitReady(5000);
    let long!: ReturnType<typeof client.exec>;
    // The long command prints its own pid, then becomes the sleep: no search of the
    // process table that could find another test's sleep.
    let longPid = 0;
    let printed = "";
    const gotPid = new Promise<void>((resolve) => {
      long = client.exec({ command: "echo $$; exec sleep 100" }, {
        onStdout: (b: Uint8Array) => {
          printed += Buffer.from(b).toString();
          if (printed.includes("\n")) resolve();
        },
      });
    });
    const short = client.exec({ command: "sleep 0.5; echo finished" });
    await Promise.race([gotPid, new Promise((r) => setTimeout(r, 5000))]);
    longPid = Number(printed.trim()) || 0;
    assert.ok(longPid > 0, "did not find the long-running sleep");
    const t0 = Date.now();
    agent.kill("SIGTERM");
    const shortResult = await short;
    assert.equal(shortResult.code, 0);
    assert.equal(shortResult.stdout.toString(), "finished\n");
    // The long call does not complete normally: its process group is killed at the end of the grace period.
    const longOutcome = await long.then((r) => `exit ${r.code}`, (err: Error) => `error ${err.message}`);
    assert.ok(!longOutcome.startsWith("exit 0"), longOutcome);
    assert.equal(await exited, 0);
    const took = Date.now() - t0;
    assert.ok(took >= 1000 && took < 5000, `shutdown took ${took} ms`);
    assert.equal(await alive(longPid), false, "sleep 100 survived the agent");
    assert.equal(await fs.stat(socketPath).then(() => true, () => false), false, "socket left behind");
  } finally {
    client.close();
    agent.kill("SIGKILL");
    await fs.rm(root, { recursive: true, force: true });
  }
});
