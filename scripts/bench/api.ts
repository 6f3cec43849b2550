// The HTTP API against the bridge it sits on, in the same run and the same workspace:
// fs/read 4 KiB over HTTP beside ReadFile over the agent's socket, exec `true` over HTTP
// beside Exec, a 256 MiB download beside ReadRaw, and 4 KiB reads at 64 in flight.
// The server is the real process (bin/memoh-workspace.mjs serve); the client keeps its
// connections alive (an undici Pool), as a platform calling the API would; the 64 reads in
// flight come from wrk.
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { once } from "node:events";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import readline from "node:readline";
import { Pool, request } from "undici";
import { checkWorkspace, openBridgeClient, type BridgeTarget } from "../../host/bridge/pool.js";
import { freePort, startServerEnv } from "../../test/integration/env/server.js";
import { ms, timeCalls, type Row } from "./stats.js";

const MIB = 1024 * 1024;
const execFileAsync = promisify(execFile);

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Requests per second that wrk measured: `connections` in flight for `seconds`; any non-2xx answer or socket error fails the benchmark. */
async function wrkRate(url: string, args: string[], connections: number, seconds: number): Promise<number> {
  const { stdout } = await execFileAsync("wrk", ["-t2", `-c${connections}`, `-d${seconds}s`, ...args, url], { encoding: "utf8" });
  const bad = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(stdout);
  if (bad) throw new Error(`wrk ${url}: ${bad[0]}`);
  const m = /Requests\/sec:\s+([\d.]+)/.exec(stdout);
  if (!m) throw new Error(`wrk printed no rate:\n${stdout}`);
  return Number(m[1]);
}

/** Bytes per second curl measured downloading `url` (to /dev/null); fails unless it got exactly `size` bytes with a 2xx. */
async function curlRate(url: string, authorization: string, size: number): Promise<number> {
  const header = authorization ? ["-H", `Authorization: ${authorization}`] : [];
  const { stdout } = await execFileAsync("curl", ["-sS", "-f", "-o", "/dev/null", ...header, "-w", "%{size_download} %{speed_download}", url], { encoding: "utf8" });
  const [got, speed] = stdout.trim().split(" ").map(Number);
  if (got !== size) throw new Error(`curl ${url}: ${got} of ${size} bytes`);
  return speed! / MIB;
}

/**
 * busybox httpd serving one file of `size` random bytes from a temporary folder: a server
 * that costs next to nothing (sendfile from the page cache), to measure what an HTTP
 * client on these cores can read at all. Ready when it answers a HEAD.
 */
async function startStaticServer(size: number): Promise<{ url: string; file: string; close: () => Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "memoh-bench-static-"));
  await fs.writeFile(path.join(dir, "big.bin"), randomBytes(size));
  const port = await freePort();
  const httpd = spawn("busybox", ["httpd", "-f", "-p", `127.0.0.1:${port}`, "-h", dir], { stdio: ["ignore", "ignore", "inherit"] });
  const exited = once(httpd, "exit");
  const url = `http://127.0.0.1:${port}/big.bin`;
  const close = async () => {
    if (httpd.exitCode === null) {
      httpd.kill();
      await exited;
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (httpd.exitCode !== null) break;
    try {
      const res = await request(url, { method: "HEAD" });
      await res.body.dump();
      if (res.statusCode === 200 && Number(res.headers["content-length"]) === size) return { url, file: path.join(dir, "big.bin"), close };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await close();
  throw new Error(`busybox httpd did not serve ${url}`);
}

export async function benchApi(): Promise<Row[]> {
  const s = await startServerEnv();
  const rows: Row[] = [];
  const pool = new Pool(s.url, { connections: 64, pipelining: 1 });
  const auth = { authorization: `Bearer ${s.adminToken}` };
  const bot = "bench-api";
  try {
    const call = async (method: "GET" | "POST", route: string, body?: unknown) => {
      const res = await pool.request({ method, path: route, headers: { ...auth, ...(body !== undefined ? { "content-type": "application/json" } : {}) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`${method} ${route}: ${res.statusCode} ${text}`);
      return text;
    };
    await call("POST", `/bots/${bot}/container`);
    await call("POST", `/bots/${bot}/container/fs/write`, { path: "bench-4k.txt", content: "x".repeat(4095) + "\n" });
    // The bridge the server uses, dialled the same way (pinned socket, identity checked).
    const target: BridgeTarget = { kind: "unix", socketPath: path.join(s.dataRoot, "run", bot, "bridge.sock"), workspaceId: `workspace-${bot}` };
    const bridge = openBridgeClient(target, { defaultTimeoutMs: 60_000 });
    await checkWorkspace(bridge, target, 5_000);
    try {
      const httpRead = await timeCalls(3000, () => call("GET", `/bots/${bot}/container/fs/read?path=bench-4k.txt`), 2000);
      const bridgeRead = await timeCalls(3000, () => bridge.readFile({ path: "bench-4k.txt" }), 2000);
      const addedRead = httpRead.p50 - bridgeRead.p50;
      rows.push({
        benchmark: "API fs/read 4 KiB over HTTP (p50 / p99)",
        ours: `${ms(httpRead.p50)} / ${ms(httpRead.p99)}`,
        baseline: `bridge ReadFile: ${ms(bridgeRead.p50)} / ${ms(bridgeRead.p99)}`,
        ratio: `+${ms(addedRead)}`,
        target: "≤ 1 ms added (p50)",
        ok: addedRead <= 1,
      });

      const httpExec = await timeCalls(300, () => call("POST", `/bots/${bot}/container/exec`, { argv: ["true"] }));
      const bridgeExec = await timeCalls(300, () => bridge.exec({ argv: ["true"] }));
      const addedExec = httpExec.p50 - bridgeExec.p50;
      rows.push({
        benchmark: "API exec `true` over HTTP (p50 / p99)",
        ours: `${ms(httpExec.p50)} / ${ms(httpExec.p99)}`,
        baseline: `bridge Exec: ${ms(bridgeExec.p50)} / ${ms(bridgeExec.p99)}`,
        ratio: `+${ms(addedExec)}`,
        target: "≤ 2 ms added (p50)",
        ok: addedExec <= 2,
      });

      // 256 MiB: made in the workspace, then read three ways, interleaved (one of each per
      // round, best of 5 rounds each), so that load from elsewhere falls on all alike.
      await call("POST", `/bots/${bot}/container/exec`, { command: "head -c 268435456 /dev/urandom > /data/big.bin" });
      // MiB/s of one whole download; a download that came short fails the benchmark.
      const timed = async (fn: () => Promise<number>): Promise<number> => {
        const t0 = process.hrtime.bigint();
        const bytes = await fn();
        if (bytes !== MIB * 256) throw new Error(`a download returned ${bytes} of ${MIB * 256} bytes`);
        return bytes / MIB / (Number(process.hrtime.bigint() - t0) / 1e9);
      };
      const viaApi = async () => {
        const res = await pool.request({ method: "GET", path: `/bots/${bot}/container/fs/download?path=big.bin`, headers: auth });
        let n = 0;
        for await (const chunk of res.body) n += chunk.length;
        return n;
      };
      const viaBridge = async () => {
        let n = 0;
        for await (const chunk of bridge.readRaw("big.bin", {}, { timeoutMs: 600_000 })) n += chunk.length;
        return n;
      };
      // The floor of the same three-process path: a bare node:http server in front of the
      // agent in its own process (scripts/bench/relay.ts), no framework, auth, manager or
      // logging; it serves the download and the 64-in-flight reads below.
      const relay = spawn(process.execPath, [...process.execArgv, path.join(import.meta.dirname, "relay.ts"), target.socketPath, target.workspaceId ?? ""], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      try {
        const [line] = (await once(readline.createInterface({ input: relay.stdout! }), "line")) as [string];
        const port = Number(line);
        let http = 0;
        let raw = 0;
        let bare = 0;
        // A whole download by undici's request (the bench's client for every relay); its byte count.
        const undiciGet = (url: string) => async () => {
          const res = await request(url);
          let n = 0;
          for await (const chunk of res.body) n += chunk.length;
          return n;
        };
        const viaRelay = undiciGet(`http://127.0.0.1:${port}/?path=big.bin`);
        // The ceilings of the HTTP path on these two cores: the same undici client reading
        // the same 256 MiB from a server that spends next to nothing on it (busybox httpd
        // sending a file of the page cache with sendfile); a relay of raw bytes (a Node
        // process writing the file to a Unix socket, a node:http server copying it into
        // its response: the API's three processes without any framing); and the API and
        // the bare relay read by curl (a client in C) for the servers' rates when the
        // client costs less.
        const ceiling = await startStaticServer(MIB * 256);
        const rawRelay = spawn(process.execPath, [...process.execArgv, path.join(import.meta.dirname, "raw-relay.ts"), ceiling.file], { stdio: ["ignore", "pipe", "inherit"] });
        let clientCeiling = 0;
        let rawBytes = 0;
        let apiByCurl = 0;
        let relayByCurl = 0;
        let rawByCurl = 0;
        let ceilingByCurl = 0;
        try {
          const [rawLine] = (await once(readline.createInterface({ input: rawRelay.stdout! }), "line")) as [string];
          const rawUrl = `http://127.0.0.1:${Number(rawLine)}/`;
          for (let round = 0; round < 5; round++) {
            http = Math.max(http, await timed(viaApi));
            raw = Math.max(raw, await timed(viaBridge));
            bare = Math.max(bare, await timed(viaRelay));
            rawBytes = Math.max(rawBytes, await timed(undiciGet(rawUrl)));
            clientCeiling = Math.max(clientCeiling, await timed(undiciGet(ceiling.url)));
            apiByCurl = Math.max(apiByCurl, await curlRate(`${s.url}/bots/${bot}/container/fs/download?path=big.bin`, auth.authorization, MIB * 256));
            relayByCurl = Math.max(relayByCurl, await curlRate(`http://127.0.0.1:${port}/?path=big.bin`, "", MIB * 256));
            rawByCurl = Math.max(rawByCurl, await curlRate(rawUrl, "", MIB * 256));
            ceilingByCurl = Math.max(ceilingByCurl, await curlRate(ceiling.url, "", MIB * 256));
          }
        } finally {
          rawRelay.kill();
          await ceiling.close();
        }
        rows.push({
          benchmark: "API download 256 MiB over HTTP (undici client; best of 5, interleaved)",
          ours: `${http.toFixed(0)} MiB/s`,
          baseline: `bridge ReadRaw: ${raw.toFixed(0)} MiB/s; bare node:http relay of ReadRaw: ${bare.toFixed(0)} MiB/s (${Math.round((http / bare) * 100)}% of it); relay of raw bytes, no framing: ${rawBytes.toFixed(0)} MiB/s; the client's own ceiling (undici from busybox httpd, sendfile): ${clientCeiling.toFixed(0)} MiB/s (${Math.round((http / clientCeiling) * 100)}% of it)`,
          ratio: `${Math.round((http / raw) * 100)}%`,
          target: "— (informs: a Node client's rate, bounded by its own ceiling)",
          ok: undefined,
        });
        // The target is judged with curl as the client, as the 64 reads in flight are with
        // wrk: on two cores a Node client's own CPU bounds what it receives (its ceiling from
        // busybox's sendfile, above, moved between 350 and 1,840 MiB/s from run to run), and
        // what is measured is the server's download, not a client library's.
        rows.push({
          benchmark: "API download 256 MiB over HTTP, curl as the client (best of 5, interleaved)",
          ours: `${apiByCurl.toFixed(0)} MiB/s`,
          baseline: `bridge ReadRaw: ${raw.toFixed(0)} MiB/s; bare node:http relay of ReadRaw, read by curl: ${relayByCurl.toFixed(0)} MiB/s; relay of raw bytes, read by curl: ${rawByCurl.toFixed(0)} MiB/s; curl from busybox httpd (sendfile): ${ceilingByCurl.toFixed(0)} MiB/s`,
          ratio: `${Math.round((apiByCurl / raw) * 100)}%`,
          target: "≥ 80% of ReadRaw",
          ok: apiByCurl / raw >= 0.8,
        });

        // Throughput: 4 KiB reads, 64 in flight. The load comes from wrk (C, from Debian):
        // a Node client in this process spent a share of the same two cores itself, and
        // what is measured is the server's rate, not the client's. The rate moves by a
        // factor of two over tens of seconds on this machine kind with nothing changed
        // (BENCHMARKS.md), so the API, the bare relay and the bridge alone take turns in
        // short rounds and each one's median round is compared.
        const inFlight = 64;
        const seconds = 3;
        const rounds = 5;
        const apiUrl = `${s.url}/bots/${bot}/container/fs/read?path=bench-4k.txt`;
        const relayUrl = `http://127.0.0.1:${port}/read?path=bench-4k.txt`;
        const apiAuth = ["-H", `Authorization: Bearer ${s.adminToken}`];
        const bridgeRate = async (secs: number) => {
          let done = 0;
          const end = Date.now() + secs * 1000;
          await Promise.all(
            Array.from({ length: inFlight }, async () => {
              while (Date.now() < end) {
                await bridge.readFile({ path: "bench-4k.txt" });
                done++;
              }
            }),
          );
          return done / secs;
        };
        await wrkRate(apiUrl, apiAuth, inFlight, 2);
        await wrkRate(relayUrl, [], inFlight, 2);
        const apiRounds: number[] = [];
        const relayRounds: number[] = [];
        const bridgeRounds: number[] = [];
        for (let round = 0; round < rounds; round++) {
          apiRounds.push(await wrkRate(apiUrl, apiAuth, inFlight, seconds));
          relayRounds.push(await wrkRate(relayUrl, [], inFlight, seconds));
          bridgeRounds.push(await bridgeRate(seconds));
        }
        const rps = median(apiRounds);
        const bareRps = median(relayRounds);
        const bridgeRps = median(bridgeRounds);
        rows.push({
          benchmark: `API fs/read 4 KiB, 64 in flight, 2 cores (server, agent and wrk on them; median of ${rounds} interleaved ${seconds} s rounds)`,
          ours: `${Math.round(rps)} requests/s (rounds ${apiRounds.map(Math.round).join(", ")})`,
          baseline: `bridge ReadFile, 64 in flight (the bridge client in this process): ${Math.round(bridgeRps)} calls/s; bare node:http server calling it: ${Math.round(bareRps)} requests/s (${Math.round((rps / bareRps) * 100)}% of it; rounds ${relayRounds.map(Math.round).join(", ")})`,
          ratio: `${Math.round((rps / bridgeRps) * 100)}%`,
          target: "≥ 3,000 requests/s",
          ok: rps >= 3000,
        });
      } finally {
        relay.kill();
      }
    } finally {
      bridge.close();
    }
  } finally {
    await pool.close();
    await s.close();
  }
  return rows;
}
