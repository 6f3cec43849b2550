import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionAlpha } from "../../proto/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Status, rpcCode } from "../../proto/rpc.js";
import { startAgent } from "../../agent/server.js";
import { startTestAgent } from "./helpers/agent.js";
import { PROTOCOL_VERSION } from "../../agent/version.js";

test("Info reports the agent's identity over the Unix socket", async () => {
  const t = await startTestAgent();
  try {
    const info = await t.client.unary(ContainerService.method.info, {});
    assert.equal(info.pid, process.pid);
    assert.equal(info.protocolVersion, PROTOCOL_VERSION);
    assert.equal(info.nodeVersion, process.version);
    assert.equal(info.dataDir, t.dataDir);
    assert.match(info.listen, /^unix:.*bridge\.sock$/);
    assert.ok(info.capabilities.includes("exec"));
    const st = await fs.stat(path.join(t.root, "run", "bridge.sock"));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
  } finally {
    await t.close();
  }
});

test("legacy TCP mode answers the same calls on 127.0.0.1", async () => {
  const t = await startTestAgent({ tcp: true });
  try {
    assert.match(t.agent.target, /^127\.0\.0\.1:\d+$/);
    const info = await t.client.unary(ContainerService.method.info, {});
    assert.match(info.listen, /^tcp:127\.0\.0\.1:\d+$/);
    await t.client.unary(ContainerService.method.writeFile, { path: "tcp.txt", content: new TextEncoder().encode("over tcp\n") });
    const read = await t.client.unary(ContainerService.method.readFile, { path: "tcp.txt" });
    assert.equal(read.content, "over tcp\n");
  } finally {
    await t.close();
  }
});

test("health reports SERVING, NOT_FOUND for unknown services", async () => {
  const t = await startTestAgent();
  try {
    const all = await t.client.unary(Health.method.check, { service: "" });
    assert.equal(all.status, HealthCheckResponse_ServingStatus.SERVING);
    const svc = await t.client.unary(Health.method.check, { service: ContainerService.typeName });
    assert.equal(svc.status, HealthCheckResponse_ServingStatus.SERVING);
    await assert.rejects(t.client.unary(Health.method.check, { service: "no.such.Service" }), (err) => rpcCode(err) === Status.NOT_FOUND);
  } finally {
    await t.close();
  }
});

test("reflection lists services and returns ContainerService's file (v1 and v1alpha)", async () => {
  const t = await startTestAgent();
  try {
    for (const svc of [ServerReflection, ServerReflectionAlpha]) {
      const call = t.client.bidi(svc.method.serverReflectionInfo);
      const replies: unknown[] = [];
      const done = new Promise<void>((resolve, reject) => {
        call.on("data", (r) => replies.push(r));
        call.on("end", () => resolve());
        call.on("error", reject);
      });
      call.write({ messageRequest: { case: "listServices", value: "*" } });
      call.write({ messageRequest: { case: "fileContainingSymbol", value: "memoh.bridge.v1.ContainerService.Exec" } });
      call.write({ messageRequest: { case: "fileContainingSymbol", value: "no.Such" } });
      call.end();
      await done;
      const [list, file, missing] = replies as Array<{ messageResponse: { case: string; value: any } }>;
      assert.equal(list!.messageResponse.case, "listServicesResponse");
      const names = list!.messageResponse.value.service.map((s: { name: string }) => s.name);
      assert.ok(names.includes("memoh.bridge.v1.ContainerService"));
      assert.ok(names.includes("grpc.health.v1.Health"));
      assert.equal(file!.messageResponse.case, "fileDescriptorResponse");
      const fd = fromBinary(FileDescriptorProtoSchema, file!.messageResponse.value.fileDescriptorProto[0]);
      assert.equal(fd.name, "memoh/bridge/v1/bridge.proto");
      assert.ok(fd.service.some((s) => s.name === "ContainerService" && s.method.some((m) => m.name === "Exec")));
      assert.equal(missing!.messageResponse.case, "errorResponse");
      assert.equal(missing!.messageResponse.value.errorCode, Status.NOT_FOUND);
    }
  } finally {
    await t.close();
  }
});

test("a stale socket is replaced; a live one is not stolen", async () => {
  const t = await startTestAgent();
  try {
    const socketPath = path.join(t.root, "run", "bridge.sock");
    await assert.rejects(startAgent({ dataDir: t.dataDir, socketPath }), /another process is serving/);
    // The live agent still answers.
    await t.client.unary(ContainerService.method.info, {});
    const stale = path.join(t.root, "stale.sock");
    const { createServer } = await import("node:net");
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(stale, r));
    // Closing a net server unlinks its socket; recreate a dead socket file by leaking one.
    srv.close();
    await new Promise<void>((r) => srv.once("close", () => r()));
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(stale, r));
    // Drop the listener without unlinking: the file stays, nobody accepts.
    (dead as unknown as { _handle: { close(): void } | null })._handle?.close();
    const second = await startAgent({ dataDir: t.dataDir, socketPath: stale });
    await second.shutdown(100);
  } finally {
    await t.close();
  }
});

test("a symlink at the socket path (the host never follows one) is replaced by the agent's socket; its target is left alone", async () => {
  const other = await startTestAgent();
  const root = await fs.mkdtemp(path.join(other.root, "linked-"));
  const socketPath = path.join(root, "bridge.sock");
  const otherSocket = path.join(other.root, "run", "bridge.sock");
  await fs.symlink(otherSocket, socketPath);
  const write = process.stderr.write.bind(process.stderr);
  const logged: string[] = [];
  process.stderr.write = ((chunk: string) => {
    logged.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
  try {
    agent = await startAgent({ dataDir: path.join(root, "data"), socketPath });
  } finally {
    process.stderr.write = write;
  }
  try {
    const st = await fs.lstat(socketPath);
    assert.ok(st.isSocket(), "the link is still there");
    assert.match(logged.join(""), /bridge\.sock is a symbolic link \(to .*run\/bridge\.sock\); replacing it/);
    assert.ok((await fs.lstat(otherSocket)).isSocket(), "the link's target was touched");
    await other.client.unary(ContainerService.method.info, {});
  } finally {
    await agent?.shutdown(100);
    await other.close();
  }
});
