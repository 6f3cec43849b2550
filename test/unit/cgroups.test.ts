// Cgroup counters: parsing the kernel's files for cgroup v1 and v2, finding a
// container's cgroup from its cgroupsPath, and the /tasks/oom event decoding.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { TaskOOMSchema } from "../../proto/gen/containerd/events/task_pb.js";
import {
  cgroupDir,
  detectCgroupVersion,
  memoryCountersV1,
  memoryCountersV2,
  parseKeyedCounters,
  parseLimit,
  pidsCounters,
  readCgroupStats,
  swapLimitSupported,
} from "../../host/containerd/cgroups.js";
import { ContainerdError } from "../../host/containerd/errors.js";
import { decodeTaskExit, decodeTaskOom, type EventEnvelope } from "../../host/containerd/events.js";

const V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
const V2_MEMORY_EVENTS = "low 0\nhigh 0\nmax 41\noom 2\noom_kill 2\noom_group_kill 0\n";
const V1_UNLIMITED = "9223372036854771712\n";

describe("parsing", () => {
  test("keyed counters: memory.oom_control (v1) and memory.events (v2)", () => {
    assert.deepEqual(parseKeyedCounters(V1_OOM_CONTROL), { oom_kill_disable: 0, under_oom: 0, oom_kill: 3 });
    assert.equal(parseKeyedCounters(V2_MEMORY_EVENTS).oom_kill, 2);
    assert.deepEqual(parseKeyedCounters(""), {});
  });

  test("limits: a number, v2 \"max\" and v1's near-2^63 mean no limit", () => {
    assert.equal(parseLimit("67108864\n"), 67108864);
    assert.equal(parseLimit("max\n"), undefined);
    assert.equal(parseLimit(V1_UNLIMITED), undefined);
    assert.throws(() => parseLimit("-1", "pids.max"), /pids.max: expected a number or "max", got "-1"/);
  });

  test("v1 memory counters", () => {
    assert.deepEqual(memoryCountersV1({ usage: "1048576\n", limit: "67108864\n", oomControl: V1_OOM_CONTROL }), { usageBytes: 1048576, limitBytes: 67108864, oomKills: 3 });
    assert.deepEqual(memoryCountersV1({ usage: "0\n", limit: V1_UNLIMITED, oomControl: "oom_kill_disable 0\nunder_oom 0\n" }), { usageBytes: 0, limitBytes: undefined, oomKills: 0 });
  });

  test("v2 memory counters", () => {
    assert.deepEqual(memoryCountersV2({ current: "2097152\n", max: "max\n", events: V2_MEMORY_EVENTS }), { usageBytes: 2097152, limitBytes: undefined, oomKills: 2 });
    assert.throws(() => memoryCountersV2({ current: "", max: "max", events: "" }), /memory.current: expected a number/);
  });

  test("pids counters", () => {
    assert.deepEqual(pidsCounters({ current: "7\n", max: "64\n" }), { current: 7, limit: 64 });
    assert.deepEqual(pidsCounters({ current: "7\n", max: "max\n" }), { current: 7, limit: undefined });
  });
});

describe("a cgroup tree", () => {
  let root: string;
  const write = (rel: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), text);
  };

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-cgroup-"));
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  test("v1: one directory per controller", async () => {
    const v1 = path.join(root, "v1");
    const w = (rel: string, text: string) => write(path.join("v1", rel), text);
    w("memory/memoh/ws-1/memory.usage_in_bytes", "4096\n");
    w("memory/memoh/ws-1/memory.limit_in_bytes", "8388608\n");
    w("memory/memoh/ws-1/memory.oom_control", V1_OOM_CONTROL);
    w("pids/memoh/ws-1/pids.current", "3\n");
    w("pids/memoh/ws-1/pids.max", "max\n");
    assert.equal(detectCgroupVersion(v1), "v1");
    assert.equal(cgroupDir("/memoh/ws-1", "freezer", { root: v1 }), path.join(v1, "freezer/memoh/ws-1"));
    assert.deepEqual(await readCgroupStats("/memoh/ws-1", { root: v1 }), {
      version: "v1",
      memory: { usageBytes: 4096, limitBytes: 8388608, oomKills: 3 },
      pids: { current: 3, limit: undefined },
    });
    assert.equal(swapLimitSupported({ root: v1 }), false);
    w("memory/memory.memsw.limit_in_bytes", V1_UNLIMITED);
    assert.equal(swapLimitSupported({ root: v1 }), true);
  });

  test("v2: one unified directory", async () => {
    const v2 = path.join(root, "v2");
    const w = (rel: string, text: string) => write(path.join("v2", rel), text);
    w("cgroup.controllers", "cpu memory pids\n");
    w("memoh/ws-2/memory.current", "12288\n");
    w("memoh/ws-2/memory.max", "16777216\n");
    w("memoh/ws-2/memory.events", V2_MEMORY_EVENTS);
    w("memoh/ws-2/pids.current", "5\n");
    w("memoh/ws-2/pids.max", "100\n");
    assert.equal(detectCgroupVersion(v2), "v2");
    assert.equal(cgroupDir("/memoh/ws-2", "memory", { root: v2 }), path.join(v2, "memoh/ws-2"));
    assert.deepEqual(await readCgroupStats("/memoh/ws-2", { root: v2 }), {
      version: "v2",
      memory: { usageBytes: 12288, limitBytes: 16777216, oomKills: 2 },
      pids: { current: 5, limit: 100 },
    });
    assert.equal(swapLimitSupported({ root: v2 }), false);
    w("memoh/memory.max", "max\n");
    w("memoh/memory.swap.max", "max\n");
    assert.equal(swapLimitSupported({ root: v2 }), true);
  });

  test("a missing cgroup is not_found; a bad cgroupsPath is refused", async () => {
    await assert.rejects(readCgroupStats("/memoh/gone", { root: path.join(root, "v1"), version: "v1" }), (err) => {
      assert.ok(err instanceof ContainerdError);
      assert.equal(err.code, "not_found");
      assert.match(err.message, /cgroup \/memoh\/gone does not exist .* is the task running\?/);
      return true;
    });
    for (const bad of ["memoh/ws", "/memoh/../../etc", "system.slice:memoh:ws"]) {
      await assert.rejects(readCgroupStats(bad, { root, version: "v2" }), (err) => err instanceof ContainerdError && err.code === "invalid_argument", bad);
    }
  });

  test("this machine's cgroup root is recognised", () => {
    const version = detectCgroupVersion();
    assert.equal(version, fs.existsSync("/sys/fs/cgroup/cgroup.controllers") ? "v2" : "v1");
  });
});

test("decodeTaskOom reads a /tasks/oom envelope and nothing else", () => {
  const oom: EventEnvelope = {
    namespace: "memoh",
    topic: "/tasks/oom",
    timestamp: new Date(1_700_000_000_000),
    typeUrl: "containerd.events.TaskOOM",
    value: toBinary(TaskOOMSchema, create(TaskOOMSchema, { containerId: "ws-1" })),
  };
  assert.deepEqual(decodeTaskOom(oom), { namespace: "memoh", containerId: "ws-1", timestamp: new Date(1_700_000_000_000) });
  assert.deepEqual(decodeTaskOom({ ...oom, typeUrl: "types.containerd.io/containerd.events.TaskOOM" })?.containerId, "ws-1");
  assert.equal(decodeTaskOom({ ...oom, typeUrl: "containerd.events.TaskExit" }), undefined);
  assert.equal(decodeTaskExit(oom), undefined);
});
