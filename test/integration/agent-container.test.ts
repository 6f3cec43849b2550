// The bridge agent from the runtime bundle, inside real containers of both test
// images under a private containerd, exercised from the host through the socket.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { BridgeClient } from "../../host/bridge/client.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import type { ExecResponse, McpStdioResponse } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { startContainerd, type ContainerdEnv } from "./env/containerd.js";
import { buildTestImages, importTestImages } from "./env/images.js";
import { requireRuntimeBundle, runContainer, waitForSocket, type RunningContainer } from "./env/container.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let env: ContainerdEnv;
let refs: Record<"busybox" | "glibc", string>;

before(async () => {
  requireRuntimeBundle();
  env = await startContainerd();
  refs = await importTestImages(env, await buildTestImages());
});

after(async () => {
  await env?.stop();
});

/** Processes in the container other than tini (pid 1), the agent and ps itself. */
async function strayProcesses(c: RunningContainer): Promise<string[]> {
  const ps = await c.exec(["ps", "-o", "pid,stat,args"]);
  assert.equal(ps.code, 0, ps.stderr);
  return ps.stdout
    .split("\n")
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => l && !/\btini\b|agent\.js|\bps -o\b/.test(l));
}

for (const image of ["busybox", "glibc"] as const) {
  describe(`bridge agent in a ${image} container`, () => {
    let container: RunningContainer;
    let client: BridgeClient;

    before(async () => {
      container = await runContainer(env, {
        id: `agent-${image}-${randomBytes(3).toString("hex")}`,
        image: refs[image],
        // server-everything and its dependencies, run by the toolkit's node.
        extraMounts: [{ src: path.join(repoRoot, "node_modules"), dst: "/mcp/node_modules", readonly: true }],
      });
      await waitForSocket(container.socketPath, 15_000);
      client = new BridgeClient(`unix:${container.socketPath}`);
      await client.waitReady(5_000);
    });

    after(async () => {
      client?.close();
      await container?.stop();
    });

    test("Info comes from the agent inside the container", async () => {
      const info = await client.info();
      assert.equal(info.listen, "unix:/run/memoh/bridge.sock");
      assert.equal(info.dataDir, "/data");
      assert.notEqual(info.pid, process.pid);
    });

    test("WriteFile then ReadFile round trip under /data", async () => {
      const text = `hello from ${image}\nsecond line\n`;
      await client.writeFile("notes/hello.txt", text);
      const read = await client.readFile({ path: "notes/hello.txt" });
      assert.equal(read.content, text);
      assert.equal(read.totalLines, 2);
      const cat = await container.exec(["cat", "/data/notes/hello.txt"]);
      assert.equal(cat.stdout, text);
    });

    test("missing path is NOT_FOUND and the agent keeps serving", async () => {
      await assert.rejects(client.readFile({ path: "no/such/file" }), (err) => rpcCode(err) === Status.NOT_FOUND);
      await client.info();
    });

    test("sh -c 'echo $X; exit 3' with env X", async () => {
      const res = await client.exec({ command: "echo $X; exit 3", env: { X: "forty-two" } });
      assert.equal(res.code, 3);
      assert.equal(res.stdout.toString(), "forty-two\n");
      assert.equal(res.timedOut, false);
    });

    test("sleep 100 with a 1 s timeout: timed_out within 2 s, nothing left running", async () => {
      const started = Date.now();
      const res = await client.exec({ argv: ["sleep", "100"], timeoutMs: 1000 });
      const elapsed = Date.now() - started;
      assert.equal(res.timedOut, true);
      assert.ok(elapsed < 2000, `took ${elapsed} ms`);
      assert.ok(res.code >= 128, `exit code ${res.code}`);
      assert.deepEqual(await strayProcesses(container), []);
    });

    test("an orphaned grandchild leaves no zombie", async () => {
      // The shell exits at once; its background child is re-parented to tini and must be reaped.
      const res = await client.exec({ command: "(sleep 0.3 &) ; exit 0" });
      assert.equal(res.code, 0);
      await sleep(1200);
      const ps = await container.exec(["ps", "-o", "pid,stat,args"]);
      const zombies = ps.stdout.split("\n").filter((l) => /^\s*\d+\s+Z/.test(l));
      assert.deepEqual(zombies, []);
      assert.deepEqual(await strayProcesses(container), []);
    });

    test("256 MiB WriteRaw then ReadRaw round trip with matching sha256", async () => {
      const size = 256 * 1024 * 1024;
      const block = randomBytes(1024 * 1024);
      const sent = createHash("sha256");
      function* source() {
        for (let i = 0; i < size / block.length; i++) {
          // Vary every block so a misplaced chunk changes the digest.
          const b = Buffer.from(block);
          b.writeUInt32BE(i, 0);
          sent.update(b);
          yield b;
        }
      }
      const written = await client.writeRaw("big.bin", source(), { timeoutMs: 120_000 });
      const sentDigest = sent.digest("hex");
      assert.equal(written.bytesWritten, size);
      assert.equal(written.sha256, sentDigest);
      const got = createHash("sha256");
      let n = 0;
      for await (const chunk of client.readRaw("big.bin", {}, { timeoutMs: 120_000 })) {
        got.update(chunk);
        n += chunk.length;
      }
      assert.equal(n, size);
      assert.equal(got.digest("hex"), sentDigest);
      await client.deleteFile("big.bin");
    });

    test("PTY: a shell on a terminal echoes input and reports its size", async () => {
      const call = client.execStream({ timeoutMs: 20_000 });
      let out = "";
      let exit: { code: number } | undefined;
      const done = new Promise<void>((resolve, reject) => {
        call.on("data", (r: ExecResponse) => {
          if (r.msg.case === "stdout") out += Buffer.from(r.msg.value).toString();
          if (r.msg.case === "exit") exit = r.msg.value;
        });
        call.on("end", () => resolve());
        call.on("error", reject);
      });
      call.write({ msg: { case: "start", value: { argv: ["/bin/sh"], pty: true, ptySize: { cols: 100, rows: 30 } } } });
      call.write({ msg: { case: "stdin", value: Buffer.from("echo pty-$((6*7)); stty size; exit 5\n") } });
      await done;
      assert.match(out, /pty-42/);
      assert.match(out, /30 100/);
      assert.equal(exit?.code, 5);
    });

    test("McpStdio runs server-everything with the toolkit's node: initialize and tools/list", async () => {
      const call = client.mcpStdio({ timeoutMs: 60_000 });
      const messages: Array<{ id?: number; result?: { serverInfo?: { name: string }; tools?: Array<{ name: string }> } }> = [];
      const waiters = new Map<number, () => void>();
      const done = new Promise<void>((resolve, reject) => {
        call.on("data", (r: McpStdioResponse) => {
          if (r.msg.case === "message") {
            const m = JSON.parse(r.msg.value);
            messages.push(m);
            if (typeof m.id === "number") waiters.get(m.id)?.();
          }
        });
        call.on("end", () => resolve());
        call.on("error", reject);
      });
      const reply = (id: number) => new Promise<void>((r) => waiters.set(id, r));
      call.write({
        msg: {
          case: "start",
          value: {
            command: "node",
            args: ["/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"],
          },
        },
      });
      const initialized = reply(1);
      call.write({
        msg: {
          case: "message",
          value: JSON.stringify({
            jsonrpc: "2.0",
            id: 1,
            method: "initialize",
            params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "memoh-test", version: "1" } },
          }),
        },
      });
      await initialized;
      call.write({ msg: { case: "message", value: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) } });
      const listed = reply(2);
      call.write({ msg: { case: "message", value: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }) } });
      await listed;
      call.write({ msg: { case: "closeStdin", value: true } });
      call.end();
      await done;
      const init = messages.find((m) => m.id === 1);
      assert.ok(init?.result?.serverInfo?.name, "initialize returned no serverInfo");
      const tools = messages.find((m) => m.id === 2)?.result?.tools ?? [];
      assert.ok(tools.some((t) => t.name === "echo"), `tools: ${tools.map((t) => t.name).join(", ")}`);
    });
  });
}

describe("the agent's contract with the host, in a busybox container", () => {
  // What the host passes: the image's ENV as BRIDGE_IMAGE_ENV (values that
  // would break the agent's own node if they reached it), the container id.
  const imageEnv = ["PATH=/image/bin:/bin:/usr/bin", "NODE_OPTIONS=--require /nonexistent", "LD_PRELOAD=/nonexistent.so", "IMAGE_VAR=from the image"];
  let container: RunningContainer;
  let client: BridgeClient;
  let id: string;

  before(async () => {
    id = `agent-contract-${randomBytes(3).toString("hex")}`;
    container = await runContainer(env, {
      id,
      image: refs.busybox,
      env: { BRIDGE_IMAGE_ENV: JSON.stringify(imageEnv), BRIDGE_WORKSPACE_ID: id },
    });
    await waitForSocket(container.socketPath, 15_000);
    client = new BridgeClient(`unix:${container.socketPath}`);
    await client.waitReady(5_000);
  });

  after(async () => {
    client?.close();
    await container?.stop();
  });

  test("Info names the workspace; Exec sees the image's environment with the toolkit appended to its PATH and no BRIDGE_*", async () => {
    assert.equal((await client.info()).workspaceId, id);
    const res = await client.exec({ argv: ["env"] });
    assert.equal(res.code, 0, res.stderr.toString());
    const vars = new Map(
      res.stdout
        .toString()
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] as const),
    );
    assert.equal(vars.get("PATH"), "/image/bin:/bin:/usr/bin:/opt/memoh/toolkit/bin");
    assert.equal(vars.get("NODE_OPTIONS"), "--require /nonexistent");
    assert.equal(vars.get("LD_PRELOAD"), "/nonexistent.so");
    assert.equal(vars.get("IMAGE_VAR"), "from the image");
    assert.deepEqual([...vars.keys()].filter((k) => k.startsWith("BRIDGE_")), []);
  });

  test("Exec as users of the image's /etc/passwd, on pipes and on a pty", async () => {
    const ids = 'echo "$(id -u) $(id -g) $(id -G) $HOME $USER"';
    assert.equal((await client.exec({ command: ids, user: "nobody" })).stdout.toString(), "65534 65534 65534 /nonexistent nobody\n");
    assert.equal((await client.exec({ command: ids, user: "1234:nogroup" })).stdout.toString(), "1234 65534 65534 / 1234\n");
    assert.equal((await client.exec({ command: ids, user: "1234:nogroup", pty: true })).stdout.toString(), "1234 65534 65534 / 1234\r\n");
    assert.equal((await client.exec({ command: ids })).stdout.toString(), "0 0 0 /root root\n");
    await assert.rejects(client.exec({ argv: ["true"], user: "app" }), (err: Error) => {
      assert.equal(rpcCode(err), Status.INVALID_ARGUMENT);
      assert.match(err.message, /user app not found in \/etc\/passwd/);
      return true;
    });
  });

  test("a spawned process gets oom_score_adj 0 whatever the agent's own is", async () => {
    const agentPid = (await client.info()).pid;
    // Raising needs no privilege; the host starts the agent low, the effect on children is the same.
    const raise = await container.exec(["sh", "-c", `echo 500 > /proc/${agentPid}/oom_score_adj`]);
    assert.equal(raise.code, 0, raise.stderr);
    const call = client.execStream({ timeoutMs: 20_000 });
    call.on("error", () => {});
    const started = new Promise<number>((resolve) => {
      call.on("data", (r: ExecResponse) => {
        if (r.msg.case === "started") resolve(r.msg.value.pid);
      });
    });
    call.write({ msg: { case: "start", value: { argv: ["sleep", "30"] } } });
    try {
      const pid = await started;
      assert.equal((await container.exec(["cat", `/proc/${pid}/oom_score_adj`])).stdout.trim(), "0");
      assert.equal((await container.exec(["cat", `/proc/${agentPid}/oom_score_adj`])).stdout.trim(), "500");
    } finally {
      call.cancel();
    }
  });
});
