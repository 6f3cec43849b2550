// The pure parts of the containerd client: read-only mount conversion, chainIDs,
// label filters, hand-encoded runc options, metrics decoding.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { readOnlyMounts } from "../../host/containerd/snapshots.js";
import { chainIds } from "../../host/containerd/oci.js";
import { labelFilter, runcOptionsAny, RUNC_OPTIONS_TYPE_URL } from "../../host/containerd/containers.js";
import { CGROUPS_V1_METRICS, decodeResourceUsage } from "../../host/containerd/metrics.js";
import { signalNumber } from "../../host/containerd/tasks.js";

test("readOnlyMounts: an active overlay keeps its writes visible as the top lowerdir", () => {
  const active = [{ type: "overlay", source: "overlay", options: ["index=off", "workdir=/s/3/work", "upperdir=/s/3/fs", "lowerdir=/s/2/fs:/s/1/fs"] }];
  assert.deepEqual(readOnlyMounts(active), [{ type: "overlay", source: "overlay", options: ["lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "index=off", "ro"] }]);
});

test("readOnlyMounts: one layer becomes a read-only bind mount (overlayfs needs two lowerdirs)", () => {
  assert.deepEqual(readOnlyMounts([{ type: "overlay", source: "overlay", options: ["workdir=/s/2/work", "upperdir=/s/2/fs"] }]), [
    { type: "bind", source: "/s/2/fs", options: ["bind", "ro"] },
  ]);
  assert.deepEqual(readOnlyMounts([{ type: "bind", source: "/s/1/fs", options: ["rbind", "rw"] }]), [{ type: "bind", source: "/s/1/fs", options: ["rbind", "ro"] }]);
  assert.throws(() => readOnlyMounts([{ type: "overlay", source: "overlay", options: ["index=off"] }]), /without lowerdir or upperdir/);
});

test("chainIds follow the OCI image spec", () => {
  const a = `sha256:${"a".repeat(64)}`;
  const b = `sha256:${"b".repeat(64)}`;
  const ab = `sha256:${createHash("sha256").update(`${a} ${b}`).digest("hex")}`;
  assert.deepEqual(chainIds([a, b]), [a, ab]);
  assert.deepEqual(chainIds([a]), [a]);
});

test("labelFilter quotes the key, and the value when needed", () => {
  assert.equal(labelFilter("memoh.bot_id", "bot-1"), 'labels."memoh.bot_id"==bot-1');
  assert.equal(labelFilter("memoh.bot_id", 'a b"c'), 'labels."memoh.bot_id"=="a b\\"c"');
});

test("runc options are encoded as containerd.runc.v1.Options (root = field 7)", () => {
  const any = runcOptionsAny({ root: "/tmp/runc", systemdCgroup: true });
  assert.equal(any.typeUrl, RUNC_OPTIONS_TYPE_URL);
  const r = new BinaryReader(any.value);
  assert.deepEqual(r.tag(), [7, WireType.LengthDelimited]);
  assert.equal(r.string(), "/tmp/runc");
  assert.deepEqual(r.tag(), [9, WireType.Varint]);
  assert.equal(r.bool(), true);
  assert.equal(r.pos, r.len);
});

test("cgroup v1 metrics: pids, cpu and memory decoded by field number", () => {
  const sub = (build: (w: BinaryWriter) => void) => {
    const w = new BinaryWriter();
    build(w);
    return w.finish();
  };
  const value = sub((w) => {
    w.tag(2, WireType.LengthDelimited).bytes(sub((p) => p.tag(1, WireType.Varint).uint64(5).tag(2, WireType.Varint).uint64(100)));
    w.tag(3, WireType.LengthDelimited).bytes(sub((c) => c.tag(1, WireType.LengthDelimited).bytes(sub((u) => u.tag(1, WireType.Varint).uint64(9000).tag(2, WireType.Varint).uint64(4000).tag(3, WireType.Varint).uint64(5000)))));
    w.tag(4, WireType.LengthDelimited).bytes(
      sub((m) => m.tag(1, WireType.Varint).uint64(11).tag(2, WireType.Varint).uint64(22).tag(33, WireType.LengthDelimited).bytes(sub((e) => e.tag(1, WireType.Varint).uint64(1 << 30).tag(2, WireType.Varint).uint64(1 << 20).tag(3, WireType.Varint).uint64(2 << 20)))),
    );
    w.tag(7, WireType.LengthDelimited).bytes(new Uint8Array([1, 2, 3])); // network: ignored
  });
  assert.deepEqual(decodeResourceUsage(CGROUPS_V1_METRICS, value), {
    cgroup: "v1",
    pids: { current: 5, limit: 100 },
    cpu: { usageNs: 9000, systemNs: 4000, userNs: 5000 },
    memory: { usage: 1 << 20, limit: 1 << 30, max: 2 << 20, rss: 22, cache: 11 },
  });
  assert.equal(decodeResourceUsage("something.Else", value), undefined);
});

test("signal names map to numbers", () => {
  assert.equal(signalNumber("SIGTERM"), 15);
  assert.equal(signalNumber("SIGKILL"), 9);
  assert.equal(signalNumber(10), 10);
});
