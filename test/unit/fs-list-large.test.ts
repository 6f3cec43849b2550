// ListDir of directories too large to sort or to send in one message, through
// a real agent process (its timings are the agent's own, not those of an agent
// sharing the test runner's event loop). The directories live on tmpfs
// (/dev/shm): creating 200,000 files on a journaling disk takes a while.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, openSync, symlinkSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { toBinary } from "@bufbuild/protobuf";
import { ContainerService, ListDirResponseSchema, type ListDirResponse } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { MAX_MESSAGE_BYTES } from "../../proto/constants.js";
import { LIST_MAX_LIMIT, LIST_PAGE_MAX_BYTES, LIST_SORT_MAX_ENTRIES } from "../../agent/limits.js";
import { readDirPage, walkTree } from "../../agent/fs/list.js";
import { FsPath } from "../../agent/paths.js";
import { startAgentProcess, type AgentProcess } from "./helpers/agent-process.js";

const m = ContainerService.method;
let t: AgentProcess;
let scratch: string;

before(async () => {
  t = await startAgentProcess();
  scratch = await fs.mkdtemp("/dev/shm/memoh-list-large-");
});
after(async () => {
  await t.stop();
  await fs.rm(scratch, { recursive: true, force: true });
});

/** Every page of a listing, following next_offset; checks the paging fields on the way. */
async function allPages(req: { path?: string; pathBytes?: Uint8Array; limit: number; recursive?: boolean }): Promise<ListDirResponse[]> {
  const pages: ListDirResponse[] = [];
  for (let offset = 0; ; ) {
    const page = await t.client.unary(m.listDir, { ...req, offset });
    assert.equal(page.nextOffset, offset + page.entries.length, "next_offset follows the page");
    if (pages.length > 0) assert.equal(page.total, pages[0]!.total, "every page counts the same listing");
    pages.push(page);
    if (!page.hasMore) {
      assert.equal(page.nextOffset, page.total);
      return pages;
    }
    assert.ok(page.entries.length > 0, "a page with more to come is never empty");
    offset = page.nextOffset;
  }
}

test("a directory of 200,000 entries is paged in directory order: no overlap, no gap, bounded memory", async (ctx) => {
  const dir = path.join(scratch, "huge");
  await fs.mkdir(dir);
  const count = 200_000;
  for (let i = 0; i < count; i++) closeSync(openSync(path.join(dir, `entry-${i}`), "w"));

  // What the agent holds while answering a page far into the directory.
  const held = await readDirPage(FsPath.fromText(dir), 150_000, LIST_MAX_LIMIT);
  assert.equal(held.total, count);
  assert.equal(held.sorted, false);
  assert.equal(held.page.length, LIST_MAX_LIMIT);
  assert.ok(held.namesHeld <= LIST_SORT_MAX_ENTRIES + LIST_MAX_LIMIT + 1, `held ${held.namesHeld} names at once`);

  const started = Date.now();
  const pages = await allPages({ path: dir, limit: LIST_MAX_LIMIT });
  ctx.diagnostic(`${pages.length} pages of ${count} entries: ${Date.now() - started} ms`);
  assert.equal(pages.length, count / LIST_MAX_LIMIT);
  for (const page of pages) {
    assert.equal(page.total, count);
    assert.equal(page.sorted, false, "too many entries to sort: directory order, and the reply says so");
    assert.equal(page.truncated, false);
  }
  const names = pages.flatMap((p) => p.entries.map((e) => e.name));
  assert.equal(names.length, count);
  assert.equal(new Set(names).size, count, "no entry on two pages");
  // The order is the directory's own: the same as reading it here.
  const order: string[] = [];
  for await (const e of await fs.opendir(dir, { bufferSize: 512 })) order.push(e.name);
  assert.deepEqual(names, order);
});

test("a directory just over the sorting bound is paged in directory order; at the bound it is sorted", async () => {
  const dir = FsPath.fromText(path.join(scratch, "bound"));
  await fs.mkdir(dir.bytes);
  for (let i = 0; i < 25; i++) closeSync(openSync(path.join(dir.shown, `n${String(i).padStart(2, "0")}`), "w"));
  const order: string[] = [];
  for await (const e of await fs.opendir(dir.bytes)) order.push(e.name);

  const unsorted: string[] = [];
  for (let offset = 0; offset < 25; offset += 7) {
    const page = await readDirPage(dir, offset, 7, 10);
    assert.deepEqual([page.total, page.sorted], [25, false]);
    unsorted.push(...page.page);
  }
  assert.deepEqual(unsorted, order);
  const sorted = await readDirPage(dir, 0, 100, 25);
  assert.equal(sorted.sorted, true);
  assert.deepEqual(sorted.page, [...order].sort());
});

test("a page is cut by its encoded size, not only its count; names that grow when encoded are measured as sent", async () => {
  const dir = path.join(scratch, "fat");
  await fs.mkdir(dir);
  // Names of 255 bytes 0xff and link targets of 4000 bytes 0xff: each invalid
  // byte becomes U+FFFD (3 bytes) in the text fields, and the bytes travel
  // beside them: about 17 KB per entry on the wire, 1,200 entries ≈ 20 MB.
  const count = 1200;
  const target = Buffer.alloc(4000, 0xff);
  for (let i = 0; i < count; i++) {
    const name = Buffer.concat([Buffer.from(String(i).padStart(4, "0")), Buffer.alloc(251, 0xff)]);
    symlinkSync(target, Buffer.concat([Buffer.from(dir + "/"), name]));
  }

  const first = await t.client.unary(m.listDir, { path: dir, limit: LIST_MAX_LIMIT });
  const encoded = toBinary(ListDirResponseSchema, first).byteLength;
  assert.equal(first.truncated, true, "the page stopped at its byte budget");
  assert.ok(first.entries.length > 0 && first.entries.length < count, `${first.entries.length} entries`);
  assert.ok(encoded <= LIST_PAGE_MAX_BYTES + 1024, `page of ${encoded} bytes`);
  assert.ok(encoded < MAX_MESSAGE_BYTES);
  assert.equal(first.hasMore, true);
  assert.equal(first.nextOffset, first.entries.length);

  const pages = await allPages({ path: dir, limit: LIST_MAX_LIMIT });
  const names = pages.flatMap((p) => p.entries.map((e) => Buffer.from(e.nameBytes).toString("latin1")));
  assert.equal(names.length, count);
  assert.equal(new Set(names).size, count);
  assert.deepEqual(names, [...names].sort(), "a directory this small is sorted");
  for (const e of pages[0]!.entries) assert.deepEqual(Buffer.from(e.symlinkTargetBytes), target);
});

test("a recursive walk streams a large directory and stops at the cap without reading it all", async () => {
  const dir = path.join(scratch, "walked");
  await fs.mkdir(path.join(dir, "big"), { recursive: true });
  // 15,000 entries: a directory larger than what a walk reads in one go.
  for (let i = 0; i < 15_000; i++) closeSync(openSync(path.join(dir, "big", `e${i}`), "w"));
  const walk = await walkTree(FsPath.fromText(dir), 0, 20_000);
  assert.equal(walk.found.length, 15_001);
  await assert.rejects(walkTree(FsPath.fromText(dir), 0, 10_000), (err) => rpcCode(err) === Status.RESOURCE_EXHAUSTED);
  const res = await t.client.unary(m.listDir, { path: dir, recursive: true, limit: 5 });
  assert.deepEqual([res.total, res.sorted, res.entries.map((e) => e.path)], [15_001, true, ["big", "big/e0", "big/e1", "big/e10", "big/e100"]]);
});
