// The floor of relaying bytes through a Node process with no protocol at all: a source
// process reads a file and writes it, as it is, to a Unix socket; a node:http server in
// another process copies what it reads from that socket into its response. Same three
// processes as the API's download (file reader → relay → client), none of the framing.
//   tsx scripts/bench/raw-relay.ts <file>                  → prints its port
//   tsx scripts/bench/raw-relay.ts --source <file> <socket> (started by the first form)
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { once } from "node:events";

const CHUNK = 256 * 1024;

if (process.argv[2] === "--source") {
  const [file, socketPath] = process.argv.slice(3) as [string, string];
  net
    .createServer(async (conn) => {
      const fd = await fs.promises.open(file, "r");
      try {
        for (let pos = 0; ; ) {
          const { bytesRead, buffer } = await fd.read(Buffer.allocUnsafe(CHUNK), 0, CHUNK, pos);
          if (bytesRead === 0) break;
          pos += bytesRead;
          if (!conn.write(buffer.subarray(0, bytesRead))) await once(conn, "drain");
        }
        conn.end();
      } finally {
        await fd.close();
      }
    })
    .listen(socketPath, () => process.stdout.write("ready\n"));
} else {
  const file = process.argv[2];
  if (!file) throw new Error("usage: raw-relay.ts <file>");
  const size = fs.statSync(file).size;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-raw-relay-"));
  const socketPath = path.join(dir, "source.sock");
  const source = spawn(process.execPath, [...process.execArgv, import.meta.filename, "--source", file, socketPath], { stdio: ["ignore", "pipe", "inherit"] });
  process.on("exit", () => {
    source.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  process.on("SIGTERM", () => process.exit(0));
  await once(readline.createInterface({ input: source.stdout! }), "line");
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(size) });
    const conn = net.connect(socketPath);
    conn.on("data", (chunk) => {
      if (!res.write(chunk) && res.writableLength > 1024 * 1024) {
        conn.pause();
        res.once("drain", () => conn.resume());
      }
    });
    conn.on("end", () => res.end());
    conn.on("error", () => res.destroy());
  });
  server.listen(0, "127.0.0.1", () => {
    const addr = server.address();
    process.stdout.write(`${typeof addr === "object" && addr ? addr.port : 0}\n`);
  });
}
