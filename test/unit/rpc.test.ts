// The protobuf-es ↔ grpc-js adapter: status codes and timeouts reach the caller.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { addService, RpcClient, RpcError, Status, rpcCode } from "../../proto/rpc.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";

async function serve(handlers: Parameters<typeof addService<typeof Health>>[2]) {
  const server = new grpc.Server();
  addService(server, Health, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, client: new RpcClient(`127.0.0.1:${port}`) };
}

test("a unary call past its timeout fails with DEADLINE_EXCEEDED, not a hang", async () => {
  const { server, client } = await serve({
    check: () => new Promise(() => {}),
    list: async () => ({}),
    watch: async () => {},
  });
  try {
    const t0 = Date.now();
    await assert.rejects(client.unary(Health.method.check, {}, { timeoutMs: 150 }), (err) => {
      assert.equal(rpcCode(err), Status.DEADLINE_EXCEEDED);
      assert.match((err as Error).message, /Check: no answer within 150 ms/);
      return true;
    });
    assert.ok(Date.now() - t0 < 2000);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test("a handler's RpcError keeps its code; other errors become INTERNAL", async () => {
  const { server, client } = await serve({
    check: async (req) => {
      if (req.service === "missing") throw new RpcError(Status.NOT_FOUND, "no such service");
      if (req.service === "boom") throw new Error("kaboom");
      return { status: HealthCheckResponse_ServingStatus.SERVING };
    },
    list: async () => ({}),
    watch: async () => {},
  });
  try {
    const ok = await client.unary(Health.method.check, { service: "" }, { timeoutMs: 5000 });
    assert.equal(ok.status, HealthCheckResponse_ServingStatus.SERVING);
    await assert.rejects(client.unary(Health.method.check, { service: "missing" }), (err) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Status.NOT_FOUND);
      assert.equal(err.message, "no such service");
      return true;
    });
    await assert.rejects(client.unary(Health.method.check, { service: "boom" }), (err) => {
      assert.equal(rpcCode(err), Status.INTERNAL);
      assert.match((err as Error).message, /kaboom/);
      return true;
    });
  } finally {
    client.close();
    server.forceShutdown();
  }
});
