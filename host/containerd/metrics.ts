// Task metrics: the shim answers with cgroup statistics as an Any
// (io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics, from
// github.com/containerd/cgroups). The handful of fields a user looks at — pids,
// CPU time, memory — are decoded here by field number, without the cgroups protos.
// Counters are numbers: exact below 2^53 (a v1 "no limit" memory limit is not).
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export const CGROUPS_V1_METRICS = "io.containerd.cgroups.v1.Metrics";
export const CGROUPS_V2_METRICS = "io.containerd.cgroups.v2.Metrics";

export interface ResourceUsage {
  cgroup: "v1" | "v2";
  pids?: { current: number; limit: number };
  /** Nanoseconds of CPU time. */
  cpu?: { usageNs: number; userNs: number; systemNs: number };
  /** Bytes. */
  memory?: { usage: number; limit: number; max?: number; rss?: number; cache?: number };
}

type Fields = Map<number, Array<bigint | Uint8Array>>;

/** One message level: varints as bigint, length-delimited as bytes; other wire types skipped. */
function fields(bytes: Uint8Array): Fields {
  const r = new BinaryReader(bytes);
  const out: Fields = new Map();
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    let v: bigint | Uint8Array | undefined;
    if (wt === WireType.Varint) v = BigInt(r.uint64());
    else if (wt === WireType.LengthDelimited) v = r.bytes();
    else r.skip(wt);
    if (v !== undefined) out.set(no, [...(out.get(no) ?? []), v]);
  }
  return out;
}

const num = (f: Fields, no: number): number => {
  const v = f.get(no)?.[0];
  return typeof v === "bigint" ? Number(v) : 0;
};
const msg = (f: Fields, no: number): Fields | undefined => {
  const v = f.get(no)?.[0];
  return v instanceof Uint8Array ? fields(v) : undefined;
};

function decodeV1(value: Uint8Array): ResourceUsage {
  const m = fields(value);
  const out: ResourceUsage = { cgroup: "v1" };
  const pids = msg(m, 2);
  if (pids) out.pids = { current: num(pids, 1), limit: num(pids, 2) };
  const usage = msg(m, 3) && msg(msg(m, 3)!, 1);
  if (usage) out.cpu = { usageNs: num(usage, 1), systemNs: num(usage, 2), userNs: num(usage, 3) };
  const mem = msg(m, 4);
  if (mem) {
    const entry = msg(mem, 33);
    out.memory = { usage: entry ? num(entry, 2) : 0, limit: entry ? num(entry, 1) : 0, max: entry ? num(entry, 3) : 0, rss: num(mem, 2), cache: num(mem, 1) };
  }
  return out;
}

function decodeV2(value: Uint8Array): ResourceUsage {
  const m = fields(value);
  const out: ResourceUsage = { cgroup: "v2" };
  const pids = msg(m, 1);
  if (pids) out.pids = { current: num(pids, 1), limit: num(pids, 2) };
  const cpu = msg(m, 2);
  if (cpu) out.cpu = { usageNs: num(cpu, 1) * 1000, userNs: num(cpu, 2) * 1000, systemNs: num(cpu, 3) * 1000 };
  const mem = msg(m, 4);
  if (mem) out.memory = { usage: num(mem, 32), limit: num(mem, 33) };
  return out;
}

/** Decodes the summary of a metrics Any; undefined for a type it does not know. */
export function decodeResourceUsage(typeUrl: string, value: Uint8Array): ResourceUsage | undefined {
  const name = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
  if (name === CGROUPS_V1_METRICS) return decodeV1(value);
  if (name === CGROUPS_V2_METRICS) return decodeV2(value);
  return undefined;
}
