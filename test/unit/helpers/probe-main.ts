// A client in a process of its own that keeps calling Info and a small
// ReadFile on an agent until its stdin closes, then prints what it measured
// as one JSON line: the latencies of every call and the errors.
//   node --import tsx probe-main.ts <grpc target> <small file path>
import { ContainerService } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { RpcClient, rpcCode } from "../../../proto/rpc.js";

const [target, smallPath] = process.argv.slice(2);
if (!target || !smallPath) {
  console.error("usage: probe-main.ts <target> <small file path>");
  process.exit(2);
}
const client = new RpcClient(target);
const info: number[] = [];
const read: number[] = [];
const errors: string[] = [];
let stopping = false;
process.stdin.resume();
process.stdin.on("end", () => (stopping = true));
process.stdin.on("close", () => (stopping = true));

async function timed(into: number[], fn: () => Promise<unknown>): Promise<void> {
  const t0 = performance.now();
  try {
    await fn();
    into.push(performance.now() - t0);
  } catch (err) {
    errors.push(`${rpcCode(err) ?? "?"}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

await client.waitForReady(10_000);
// Warm both calls (JIT, first-connection costs) before measuring.
for (let i = 0; i < 20; i++) {
  await client.unary(ContainerService.method.info, {});
  await client.unary(ContainerService.method.readFile, { path: smallPath });
}
console.log("ready");
while (!stopping) {
  await timed(info, () => client.unary(ContainerService.method.info, {}, { timeoutMs: 5_000 }));
  await timed(read, async () => {
    const res = await client.unary(ContainerService.method.readFile, { path: smallPath }, { timeoutMs: 5_000 });
    if (res.content.length === 0) throw new Error("the small file came back empty");
  });
  await new Promise((r) => setTimeout(r, 5));
}
client.close();
console.log(JSON.stringify({ info, read, errors }));
