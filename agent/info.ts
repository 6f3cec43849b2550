import os from "node:os";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "./context.js";
import type { InfoResponseSchema } from "../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { AGENT_VERSION, CAPABILITIES, PROTOCOL_VERSION } from "./version.js";

export async function info(ctx: AgentContext): Promise<MessageInitShape<typeof InfoResponseSchema>> {
  const hostname = os.hostname();
  return {
    agentVersion: AGENT_VERSION,
    protocolVersion: PROTOCOL_VERSION,
    pid: process.pid,
    uptimeSeconds: (Date.now() - ctx.startedAt) / 1000,
    capabilities: [...CAPABILITIES],
    nodeVersion: process.version,
    dataDir: ctx.dataDir,
    listen: ctx.listen,
    hostname,
    // The host names a workspace's hostname after its container id, so the
    // hostname identifies it when the host did not pass the id.
    workspaceId: ctx.workspaceId || hostname,
  };
}
