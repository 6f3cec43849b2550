import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function stat(ctx: AgentContext, req: pb.StatRequest): Promise<MessageInitShape<typeof pb.StatResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "Stat is not implemented yet");
}
