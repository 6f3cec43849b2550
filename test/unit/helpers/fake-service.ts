// A ContainerService on a temp unix socket whose handlers the test scripts: every
// method not given answers UNIMPLEMENTED. For checking how the host's BridgeClient
// treats what an agent sends (or receives), without an agent.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { addService, RpcError, Status, type ServiceHandlers } from "../../../proto/rpc.js";
import { ContainerService } from "../../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { BridgeClient } from "../../../host/bridge/client.js";

export interface FakeService {
  client: BridgeClient;
  /** The unix socket it listens on. */
  socket: string;
  close(): void;
}

export async function startFakeService(handlers: Partial<ServiceHandlers<typeof ContainerService>>): Promise<FakeService> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-fake-agent-"));
  const server = new grpc.Server();
  const impl: Record<string, unknown> = {};
  for (const m of ContainerService.methods) impl[m.localName] = async () => Promise.reject(new RpcError(Status.UNIMPLEMENTED, `${m.name} is not faked`));
  Object.assign(impl, handlers);
  addService(server, ContainerService, impl as ServiceHandlers<typeof ContainerService>);
  const socket = path.join(dir, "agent.sock");
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  const client = new BridgeClient(`unix:${socket}`);
  return {
    client,
    socket,
    close() {
      client.close();
      server.forceShutdown();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
