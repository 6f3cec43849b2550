// BridgeClient.readTree treats the agent's stream as untrusted: a fake ContainerService
// answers ReadTree with scripted streams that break the protocol, and each is refused
// as a protocol violation (INTERNAL) instead of reaching the archive.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Status } from "../../proto/rpc.js";
import { FileType, type ReadTreeMessageSchema, type ReadTreeRequest } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../../host/bridge/client.js";
import { startFakeService, type FakeService } from "./helpers/fake-service.js";
import { rejectsWith } from "./helpers/fs.js";

type Msg = MessageInitShape<typeof ReadTreeMessageSchema>;
const b = (s: string) => Buffer.from(s, "latin1");
const root: Msg = { msg: { case: "entry", value: { path: new Uint8Array(0), type: FileType.DIRECTORY, mode: 0o755 } } };
const file = (p: string, size: number): Msg => ({ msg: { case: "entry", value: { path: b(p), type: FileType.FILE, mode: 0o644, size: BigInt(size) } } });
const data = (n: number): Msg => ({ msg: { case: "data", value: Buffer.alloc(n, 0x61) } });

/** The scripted streams, by request path. */
const scripts: Record<string, Msg[]> = {
  good: [root, file("a", 3), data(2), data(1), { msg: { case: "skipped", value: { path: b("p"), reason: "a FIFO" } } }, file("b", 4), data(1), { msg: { case: "truncated", value: { path: b("b"), sent: 1n, reason: "shrank while read" } } }],
  "no-root": [file("a", 0)],
  "two-roots": [root, root],
  "data-first": [root, data(1)],
  "too-much": [root, file("a", 2), data(3)],
  "entry-while-due": [root, file("a", 2), data(1), file("b", 0)],
  "ends-while-due": [root, file("a", 2), data(1)],
  "dotdot": [root, file("../etc/passwd", 0)],
  "absolute": [root, file("/etc/passwd", 0)],
  "bad-truncated": [root, file("a", 5), data(2), { msg: { case: "truncated", value: { path: b("a"), sent: 1n, reason: "x" } } }],
  "other-truncated": [root, file("a", 5), data(2), { msg: { case: "truncated", value: { path: b("b"), sent: 2n, reason: "x" } } }],
  "dir-size": [root, { msg: { case: "entry", value: { path: b("d"), type: FileType.DIRECTORY, size: 9n } } }],
  "other-type": [root, { msg: { case: "entry", value: { path: b("s"), type: FileType.OTHER } } }],
  empty: [],
  "link-with-bytes": [root, file("a", 1), data(1), { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, size: 1n, hardlinkTarget: b("a") } } }],
  "link-to-itself": [root, { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, hardlinkTarget: b("b") } } }],
  "link-outside": [root, { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, hardlinkTarget: b("../x") } } }],
  "dir-link": [root, { msg: { case: "entry", value: { path: b("d"), type: FileType.DIRECTORY, hardlinkTarget: b("a") } } }],
  "good-link": [root, file("a", 1), data(1), { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, hardlinkTarget: b("a") } } }],
  "link-to-missing": [root, file("a", 0), { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, hardlinkTarget: b("c") } } }, file("c", 0)],
  "unasked-link": [root, file("a", 0), { msg: { case: "entry", value: { path: b("b"), type: FileType.FILE, hardlinkTarget: b("a") } } }],
  "link-to-dir": [root, { msg: { case: "entry", value: { path: b("d"), type: FileType.DIRECTORY } } }, { msg: { case: "entry", value: { path: b("e"), type: FileType.FILE, hardlinkTarget: b("d") } } }],
};

let fake: FakeService;
let client: BridgeClient;

before(async () => {
  fake = await startFakeService({
    readTree: async (req: ReadTreeRequest, call: grpc.ServerWritableStream<ReadTreeRequest, Msg>) => {
      for (const msg of scripts[req.path] ?? []) call.write(msg);
    },
  });
  client = fake.client;
});
after(() => fake.close());

async function drain(p: string): Promise<string[]> {
  const out: string[] = [];
  for await (const ev of client.readTree(p, { hardlinks: p.includes("link") && p !== "unasked-link" })) out.push(ev.kind === "data" ? `data:${ev.data.byteLength}` : ev.kind === "truncated" ? `truncated:${ev.path}:${ev.sent}` : `${ev.kind}:${ev.path}`);
  return out;
}

test("a well-formed stream passes through as it came", async () => {
  assert.deepEqual(await drain("good"), ["entry:", "entry:a", "data:2", "data:1", "skipped:p", "entry:b", "data:1", "truncated:b:1"]);
});

test("a hardlink entry passes with its target and no data", async () => {
  const out: string[] = [];
  for await (const ev of client.readTree("good-link", { hardlinks: true })) out.push(ev.kind === "entry" ? `${ev.path}>${ev.hardlinkTarget}` : ev.kind);
  assert.deepEqual(out, [">", "a>", "data", "b>a"]);
});

test("streams that break the order, the byte counts or the paths are protocol violations", async () => {
  const cases: Array<[string, RegExp]> = [
    ["no-root", /first entry is not the root/],
    ["two-roots", /second root entry/],
    ["data-first", /0 due/],
    ["too-much", /3 bytes of data with 2 due/],
    ["entry-while-due", /entry with 1 bytes of a file still due/],
    ["ends-while-due", /ended with 1 bytes of a file still due/],
    ["dotdot", /not a plain relative path/],
    ["absolute", /not a plain relative path/],
    ["bad-truncated", /after 1 bytes, but sent 2/],
    ["other-truncated", /truncated a file it was not sending/],
    ["dir-size", /size for an entry that is not a file/],
    ["other-type", /entry of type 4/],
    ["empty", /ended without the root's entry/],
    ["link-with-bytes", /hardlink target for an entry that cannot be one/],
    ["link-to-itself", /hardlink target for an entry that cannot be one/],
    ["link-outside", /hardlink target path .* is not a plain relative path/],
    ["dir-link", /hardlink target for an entry that cannot be one/],
    ["link-to-missing", /hardlink to "c", which is not a file it sent before/],
    ["link-to-dir", /hardlink to "d", which is not a file it sent before/],
    ["unasked-link", /hardlink entry that was not asked for/],
  ];
  for (const [name, message] of cases) {
    const err = await rejectsWith(drain(name), Status.INTERNAL, message);
    assert.match(err.message, /bridge protocol violation/, name);
  }
});

test("link targets are checked while their paths fit the budget; past it, links are taken as they come", async () => {
  const { checkTree } = await import("../../host/bridge/read-tree.js");
  const { create } = await import("@bufbuild/protobuf");
  const { ReadTreeMessageSchema } = await import("../../proto/gen/memoh/bridge/v1/bridge_pb.js");
  const msgs = (list: Msg[]) => (async function* () {
    for (const m of list) yield create(ReadTreeMessageSchema, m);
  })();
  const linkTo = (p: string, t: string): Msg => ({ msg: { case: "entry", value: { path: b(p), type: FileType.FILE, hardlinkTarget: b(t) } } });
  const stream = [root, file("a", 0), file("b", 0), linkTo("c", "a")];
  const seen: string[] = [];
  for await (const ev of checkTree(msgs(stream), { hardlinks: true, heldBytes: 1024 })) if (ev.kind === "entry") seen.push(ev.path.toString());
  assert.deepEqual(seen, ["", "a", "b", "c"]);
  await assert.rejects(
    (async () => {
      for await (const _ of checkTree(msgs([root, file("a", 0), linkTo("c", "x")]), { hardlinks: true, heldBytes: 1024 }));
    })(),
    /not a file it sent before/,
  );
  // Two paths of 65 bytes each pass a budget of 100: no longer checked, the link to "x" passes.
  const past: string[] = [];
  for await (const ev of checkTree(msgs([root, file("a", 0), file("b", 0), linkTo("c", "x")]), { hardlinks: true, heldBytes: 100 })) if (ev.kind === "entry") past.push(ev.path.toString());
  assert.deepEqual(past, ["", "a", "b", "c"]);
});
