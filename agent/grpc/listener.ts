// The agent's own listener in front of grpc-js: it accepts connections on the
// Unix socket (or the legacy TCP port), keeps their number within
// MAX_CONNECTIONS, closes a connection that does not send the HTTP/2
// connection preface within HANDSHAKE_TIMEOUT_MS, and hands the others to the
// grpc-js server through its public connection injector
// (Server.createConnectionInjector, grpc-js ≥ 1.10). grpc-js itself enforces
// the per-connection stream limit (grpc.max_concurrent_streams) and closes
// connections that stay idle (grpc.max_connection_idle_ms).
//
// grpc-js's own bindAsync offers none of the first three: its HTTP/2 server
// accepts any number of connections and keeps one that never speaks forever.
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { logLine } from "../log.js";

/** What every HTTP/2 client sends first (RFC 9113 §3.4). */
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export interface ListenerLimits {
  /** Connections served at once; one more is closed at once. */
  maxConnections: number;
  /** A connection that has not sent the preface after this long is closed. */
  handshakeTimeoutMs: number;
}

export interface ListenerStats {
  /** Connections open now (handshaking or served). */
  open: number;
  /** Connections closed at once because MAX_CONNECTIONS were open. */
  refused: number;
  /** Connections closed for not sending the preface in time, or sending something else. */
  noHandshake: number;
}

export interface Listener {
  /** "host:port" of a TCP listener, or the socket path. */
  readonly address: net.AddressInfo | string;
  stats(): ListenerStats;
  /** Stops accepting (at once); connections still handshaking are closed, served ones are grpc-js's to close. */
  close(): Promise<void>;
}

export async function listen(
  server: grpc.Server,
  where: { path: string } | { host: string; port: number },
  limits: ListenerLimits,
): Promise<Listener> {
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const handshaking = new Set<net.Socket>();
  const stats: ListenerStats = { open: 0, refused: 0, noHandshake: 0 };
  let lastRefusalLog = 0;

  const netServer = net.createServer({ noDelay: true, pauseOnConnect: false }, (socket) => {
    socket.on("error", () => undefined); // a peer that resets is no error of ours
    if (stats.open >= limits.maxConnections) {
      stats.refused++;
      if (Date.now() - lastRefusalLog > 10_000) {
        lastRefusalLog = Date.now();
        logLine(`${limits.maxConnections} connections are open: closing new ones (${stats.refused} so far)`);
      }
      socket.destroy();
      return;
    }
    stats.open++;
    socket.once("close", () => stats.open--);
    handshaking.add(socket);

    const received: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => fail(), limits.handshakeTimeoutMs);
    const fail = (): void => {
      cleanup();
      stats.noHandshake++;
      socket.destroy();
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      handshaking.delete(socket);
      socket.off("readable", onReadable);
      socket.off("end", fail);
    };
    function onReadable(): void {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        received.push(chunk);
        got += chunk.byteLength;
      }
      if (got === 0) return;
      const head = received.length === 1 ? received[0]! : Buffer.concat(received, got);
      received.length = 0;
      received.push(head);
      const n = Math.min(got, PREFACE.byteLength);
      if (!head.subarray(0, n).equals(PREFACE.subarray(0, n))) return fail();
      if (got < PREFACE.byteLength) return;
      cleanup();
      // The bytes read so far go back to the socket; the HTTP/2 session reads them first.
      socket.unshift(head);
      injector.injectConnection(socket);
    }
    socket.on("readable", onReadable);
    socket.on("end", fail);
  });

  await new Promise<void>((resolve, reject) => {
    netServer.once("error", reject);
    const done = (): void => {
      netServer.off("error", reject);
      resolve();
    };
    if ("path" in where) netServer.listen(where.path, done);
    else netServer.listen(where.port, where.host, done);
  });
  netServer.on("error", (err) => logLine(`listener error: ${err.message}`));
  const address = netServer.address()!;

  let closing: Promise<void> | undefined;
  return {
    address,
    stats: () => ({ ...stats }),
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const socket of handshaking) socket.destroy();
        handshaking.clear();
        // close()'s callback waits for every connection; not listening is what counts here.
        netServer.close();
        resolve();
      });
      return closing;
    },
  };
}
