// The host's HTTP/2 client connection against nghttp2 (a node:http2 server): header
// values of every byte the peer may send, through Huffman coding and the dynamic table;
// a request body far larger than the peer's windows; the peer's stream limit; GOAWAY;
// and a peer that does not speak HTTP/2; every connection and stream error a peer can
// cause. One file for the one class: the helpers (a scripted peer, frame builders)
// serve every test here.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { H2Connection, type HeaderFields, type StreamEnd } from "../../host/bridge/h2-connection.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-h2-conn-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let serial = 0;

async function serve(handler: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, session: http2.Http2Session) => void, settings: http2.Settings = {}) {
  const server = http2.createServer({ settings });
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    handler(stream, headers, stream.session!);
  });
  const socket = path.join(tmp, `s${serial++}.sock`);
  server.listen(socket);
  await once(server, "listening");
  return { socket, close: () => server.close() };
}

interface Reply {
  headers: HeaderFields[];
  body: Buffer;
  end: StreamEnd;
}

function call(conn: H2Connection, path: string, body = Buffer.alloc(0), extra: Array<[string, string]> = []): Promise<Reply> {
  return new Promise((resolve) => {
    const headers: HeaderFields[] = [];
    const chunks: Buffer[] = [];
    conn.request([[":method", "POST"], [":scheme", "http"], [":authority", "localhost"], [":path", path], ...extra], body, {
      headers: (fields) => headers.push(fields),
      data: (chunk) => chunks.push(Buffer.from(chunk)),
      close: (end) => resolve({ headers, body: Buffer.concat(chunks), end }),
    });
  });
}

/** `p`, or a failure naming what did not happen within `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`waited ${ms} ms for ${what}`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

const connect = (socket: string, onUnusable?: () => void) => new H2Connection(net.connect(socket), { windowBytes: 4 * 1024 * 1024, ...(onUnusable ? { onUnusable } : {}) });

test("header values of every byte nghttp2 sends arrive intact, Huffman-coded or not, the dynamic table reused across replies", async () => {
  // Bytes node lets a header value hold: tab, printable ASCII, and 0x80–0xff (latin1).
  const bytes = [0x09, ...Array.from({ length: 0x7f - 0x20 }, (_, i) => 0x20 + i), ...Array.from({ length: 0x80 }, (_, i) => 0x80 + i)];
  // Among short codes, so nghttp2 chooses Huffman; and alone, where it does not.
  // (A value never begins or ends with white space.)
  const e = "e".repeat(16);
  const values = (b: number) => [`${e}${String.fromCharCode(b)}${e}`, `\u00ff${String.fromCharCode(b)}\u00ff\u00ff`];
  const s = await serve((stream) => {
    const headers: http2.OutgoingHttpHeaders = { ":status": 200 };
    for (const b of bytes) {
      const [mixed, alone] = values(b);
      headers[`x-m${b}`] = mixed;
      headers[`x-a${b}`] = alone;
    }
    stream.respond(headers, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "grpc-message": "done %20 ok" }));
    stream.end("body");
  });
  const conn = connect(s.socket);
  try {
    for (let round = 0; round < 3; round++) {
      const r = await call(conn, "/x");
      assert.equal(r.end.kind, "done");
      assert.equal(r.body.toString(), "body");
      assert.equal(r.headers.length, 2);
      const [h, trailers] = r.headers as [HeaderFields, HeaderFields];
      assert.equal(h[":status"], "200");
      for (const b of bytes) {
        const [mixed, alone] = values(b);
        assert.equal(h[`x-m${b}`], mixed, `byte ${b}, among others (round ${round})`);
        assert.equal(h[`x-a${b}`], alone, `byte ${b}, alone (round ${round})`);
      }
      assert.deepEqual(trailers, { "grpc-status": "0", "grpc-message": "done %20 ok" });
    }
  } finally {
    conn.close();
    s.close();
  }
});

test("a 5 MiB request body reaches nghttp2 whole beside another stream", async () => {
  const s = await serve(
    (stream) => {
      const hash = createHash("sha256");
      let n = 0;
      stream.on("data", (d: Buffer) => {
        hash.update(d);
        n += d.length;
      });
      stream.on("end", () => {
        stream.respond({ ":status": 200 });
        stream.end(`${n} ${hash.digest("hex")}`);
      });
    },
    { initialWindowSize: 65_535 },
  );
  const conn = connect(s.socket);
  try {
    const body = Buffer.alloc(5 * 1024 * 1024 + 3);
    for (let i = 0; i < body.length; i += 4096) body[i] = (i / 4096) & 0xff;
    const [a, b] = await Promise.all([call(conn, "/a", body), call(conn, "/b", body.subarray(0, 100_000))]);
    assert.equal(a.body.toString(), `${body.length} ${createHash("sha256").update(body).digest("hex")}`);
    assert.equal(b.body.toString(), `100000 ${createHash("sha256").update(body.subarray(0, 100_000)).digest("hex")}`);
  } finally {
    conn.close();
    s.close();
  }
});

/** A scripted HTTP/2 peer: it sends `start` frames, then records every frame the client sends. */
async function scriptedPeer(start: Buffer[]) {
  const frames: Array<{ type: number; flags: number; id: number; payload: Buffer }> = [];
  let peer: net.Socket | undefined;
  let connected: () => void = () => {};
  const accepted = new Promise<void>((resolve) => (connected = resolve));
  const server = net.createServer((sock) => {
    peer = sock;
    connected();
    sock.write(Buffer.concat(start));
    let buf = Buffer.alloc(0);
    let preface = false;
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!preface) {
        if (buf.length < 24) return;
        buf = buf.subarray(24);
        preface = true;
      }
      while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
        const length = buf.readUIntBE(0, 3);
        frames.push({ type: buf[3]!, flags: buf[4]!, id: buf.readUInt32BE(5), payload: Buffer.from(buf.subarray(9, 9 + length)) });
        buf = buf.subarray(9 + length);
      }
    });
  });
  const socket = path.join(tmp, `p${serial++}.sock`);
  server.listen(socket);
  await once(server, "listening");
  let pings = 0;
  return {
    socket,
    frames,
    send: (...parts: Buffer[]) => peer!.write(Buffer.concat(parts)),
    /** Resolves when the client has answered a PING sent now: everything it sent before is in `frames`. */
    async sync() {
      await accepted;
      const tag = Buffer.alloc(8);
      tag.writeUInt32BE(++pings);
      peer!.write(Buffer.concat([frameHead(8, 6, 0, 0), tag]));
      while (!frames.some((f) => f.type === 6 && f.flags === 1 && f.payload.equals(tag))) await new Promise((r) => setTimeout(r, 2));
    },
    close: () => {
      peer?.destroy();
      server.close();
    },
  };
}

function frameHead(length: number, type: number, flags: number, id: number): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return h;
}
const settingsFrame = (entries: Array<[number, number]>) => {
  const p = Buffer.alloc(6 * entries.length);
  entries.forEach(([k, v], i) => {
    p.writeUInt16BE(k, 6 * i);
    p.writeUInt32BE(v, 6 * i + 2);
  });
  return Buffer.concat([frameHead(p.length, 4, 0, 0), p]);
};
const windowUpdate = (id: number, n: number) => {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(n);
  return Buffer.concat([frameHead(4, 8, 0, id), p]);
};

test("the client sends no more than the peer's stream and connection windows allow, and goes on as they open", async () => {
  // Streams get a window of 1,000 bytes; the connection keeps the default 65,535.
  const peer = await scriptedPeer([settingsFrame([[4, 1000]])]);
  const conn = connect(peer.socket);
  const sent = (id: number) => peer.frames.filter((f) => f.type === 0 && f.id === id).reduce((n, f) => n + f.payload.length, 0);
  const ended = (id: number) => peer.frames.some((f) => f.type === 0 && f.id === id && (f.flags & 1) === 1);
  try {
    // Once the client answered a PING, it has taken the SETTINGS before it.
    await peer.sync();
    void call(conn, "/a", Buffer.alloc(5000, 1));
    await peer.sync();
    assert.equal(sent(1), 1000);
    assert.equal(ended(1), false);
    peer.send(windowUpdate(1, 1500));
    await peer.sync();
    assert.equal(sent(1), 2500);
    peer.send(windowUpdate(1, 10_000));
    await peer.sync();
    assert.equal(sent(1), 5000);
    assert.equal(ended(1), true);

    // The connection's window: 65,535 less the 5,000 sent; a stream window large enough.
    peer.send(settingsFrame([[4, 1_000_000]]));
    void call(conn, "/b", Buffer.alloc(100_000, 2));
    await peer.sync();
    assert.equal(sent(3), 65_535 - 5000);
    peer.send(windowUpdate(0, 100_000));
    await peer.sync();
    assert.equal(sent(3), 100_000);
    assert.equal(ended(3), true);
    // Frames no larger than the default maximum.
    assert.ok(peer.frames.every((f) => f.payload.length <= 16_384));
  } finally {
    peer.close();
  }
});

test("no more streams are opened than the peer allows: the rest wait and all complete", async () => {
  let open = 0;
  let most = 0;
  const s = await serve(
    (stream) => {
      open++;
      most = Math.max(most, open);
      stream.resume();
      setTimeout(() => {
        stream.respond({ ":status": 200 });
        stream.end("ok", () => open--);
      }, 5);
    },
    { maxConcurrentStreams: 3 },
  );
  const conn = connect(s.socket);
  try {
    // The first waits for the peer's SETTINGS to be known; then twenty at once.
    assert.equal((await call(conn, "/first")).body.toString(), "ok");
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => call(conn, `/${i}`)));
    assert.ok(replies.every((r) => r.end.kind === "done" && r.body.toString() === "ok"));
    assert.ok(most <= 3, `${most} streams were open at once`);
    assert.equal(most, 3);
  } finally {
    conn.close();
    s.close();
  }
});

test("GOAWAY: streams the peer took finish, the connection takes no new one, and says so", async () => {
  let release: (() => void) | undefined;
  const s = await serve((stream, _headers, session) => {
    stream.resume();
    release = () => {
      stream.respond({ ":status": 200 });
      stream.end("finished");
    };
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 1);
  });
  let unusable = 0;
  const conn = connect(s.socket, () => unusable++);
  try {
    const first = call(conn, "/held");
    while (unusable === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(conn.usable, false);
    assert.throws(() => conn.request([[":path", "/late"]], Buffer.alloc(0), { headers() {}, data() {}, close() {} }), /closing/);
    release!();
    const r = await first;
    assert.equal(r.end.kind, "done");
    assert.equal(r.body.toString(), "finished");
    assert.equal(unusable, 1);
  } finally {
    s.close();
  }
});

test("a peer that does not speak HTTP/2 loses the stream with a clear error", async () => {
  const server = net.createServer((sock) => sock.end("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"));
  const socket = path.join(tmp, "http1.sock");
  server.listen(socket);
  await once(server, "listening");
  const conn = connect(socket);
  try {
    const r = await call(conn, "/x");
    assert.equal(r.end.kind, "lost");
    assert.match((r.end as { error: Error }).error.message, /HTTP\/2|closed/);
    assert.equal(conn.usable, false);
  } finally {
    server.close();
  }
});

test("a peer that breaks the protocol gets GOAWAY with the matching code, and the call is lost with a message naming the fault", async () => {
  const hdr = (type: number, flags: number, id: number, payload: Buffer) => Buffer.concat([frameHead(payload.length, type, flags, id), payload]);
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  };
  const cases: Array<[string, Buffer, number, RegExp]> = [
    ["DATA on stream 0", hdr(0, 0, 0, Buffer.from("x")), 1, /DATA on stream 0/],
    ["a frame on a stream never opened", hdr(0, 0, 7, Buffer.from("x")), 1, /stream 7, which this client never opened/],
    ["a frame above the maximum size", frameHead(20_000, 0, 0, 1), 6, /a frame of 20000 bytes/],
    ["PUSH_PROMISE", hdr(5, 4, 1, Buffer.alloc(4)), 1, /PUSH_PROMISE/],
    ["CONTINUATION without HEADERS", hdr(9, 4, 1, Buffer.from([0x88])), 1, /CONTINUATION without its HEADERS/],
    ["a header block interrupted", Buffer.concat([hdr(1, 0, 1, Buffer.from([0x88])), hdr(0, 0, 1, Buffer.from("x"))]), 1, /interrupted/],
    ["a header block HPACK cannot decode", hdr(1, 4, 1, Buffer.from([0x80])), 9, /header index 0/],
    ["a SETTINGS frame of a partial entry", hdr(4, 0, 0, Buffer.alloc(5)), 6, /partial entry/],
    ["a connection window overflow", hdr(8, 0, 0, u32(0x7fffffff)), 3, /window overflowed/],
    ["a WINDOW_UPDATE of 0 on the connection", hdr(8, 0, 0, u32(0)), 1, /WINDOW_UPDATE of 0/],
  ];
  for (const [what, bytes, code, pattern] of cases) {
    const peer = await scriptedPeer([settingsFrame([])]);
    const conn = connect(peer.socket);
    try {
      await peer.sync();
      const reply = call(conn, "/x");
      peer.send(bytes);
      const r = await within(reply, 5_000, `the call to end (${what})`);
      assert.equal(r.end.kind, "lost", what);
      assert.match((r.end as { error: Error }).error.message, pattern, what);
      assert.equal(conn.usable, false, what);
      // The peer was told why.
      while (!peer.frames.some((f) => f.type === 7)) await new Promise((res) => setTimeout(res, 2));
      const goaway = peer.frames.find((f) => f.type === 7)!;
      assert.equal(goaway.payload.readUInt32BE(4), code, `${what}: GOAWAY code`);
    } finally {
      peer.close();
    }
  }
});

test("stream errors reset the one stream and leave the connection: DATA before the headers, DATA past a paused stream's window", async () => {
  const hdr = (type: number, flags: number, id: number, payload: Buffer) => Buffer.concat([frameHead(payload.length, type, flags, id), payload]);
  const peer = await scriptedPeer([settingsFrame([])]);
  const conn = connect(peer.socket);
  const rst = (id: number) => peer.frames.find((f) => f.type === 3 && f.id === id);
  try {
    await peer.sync();
    const first = call(conn, "/early-data");
    peer.send(hdr(0, 0, 1, Buffer.from("x")));
    const r1 = await within(first, 5_000, "the stream that got DATA before its headers to end");
    assert.deepEqual(r1.end, { kind: "reset", code: 1, byPeer: false });
    await peer.sync();
    assert.equal(rst(1)?.payload.readUInt32BE(0), 1);

    // A paused stream returns no window: the peer may send 4 MiB and no more.
    let ended: StreamEnd | undefined;
    const stream = conn.request([[":path", "/paused"]], Buffer.alloc(0), { headers() {}, data() {}, close: (end) => void (ended = end) });
    stream.pause();
    const frames = [hdr(1, 4, 3, Buffer.from([0x88]))];
    for (let sent = 0; sent <= 4 * 1024 * 1024; sent += 16_384) frames.push(hdr(0, 0, 3, Buffer.alloc(16_384)));
    peer.send(...frames);
    await within(
      (async () => {
        while (ended === undefined) await new Promise((res) => setTimeout(res, 2));
      })(),
      5_000,
      "the paused stream to be reset",
    );
    assert.deepEqual(ended, { kind: "reset", code: 3, byPeer: false });
    await peer.sync();
    assert.equal(rst(3)?.payload.readUInt32BE(0), 3);
    assert.equal(conn.usable, true);
    assert.equal(peer.frames.some((f) => f.type === 7), false, "no GOAWAY");
  } finally {
    peer.close();
  }
});

test("a connection whose stream ids are spent finishes its open streams and refuses the waiting ones, so they are made elsewhere", async () => {
  const s = await serve(
    (stream) => {
      stream.resume();
      setTimeout(() => {
        stream.respond({ ":status": 200 });
        stream.end("ok");
      }, 5);
    },
    { maxConcurrentStreams: 1 },
  );
  let unusable = 0;
  const conn = new H2Connection(net.connect(s.socket), { windowBytes: 4 * 1024 * 1024, lastStreamId: 5, onUnusable: () => unusable++ });
  try {
    // Stream 1; afterwards the peer's limit of one stream is known.
    assert.equal((await within(call(conn, "/a"), 5_000, "stream 1")).end.kind, "done");
    // 3 opens, 5 waits for it and is the last id; 7 would be past it.
    const [b, c, d] = await within(Promise.all([call(conn, "/b"), call(conn, "/c"), call(conn, "/d")]), 5_000, "three more calls");
    assert.deepEqual([b.end, c.end], [{ kind: "done" }, { kind: "done" }]);
    assert.equal(c.body.toString(), "ok");
    assert.deepEqual(d.end, { kind: "reset", code: 7, byPeer: false });
    assert.equal(conn.usable, false);
    assert.equal(unusable, 1);
  } finally {
    s.close();
  }
});
