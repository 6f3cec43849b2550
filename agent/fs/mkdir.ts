import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function mkdir(ctx: AgentContext, req: pb.MkdirRequest): Promise<MessageInitShape<typeof pb.MkdirResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "Mkdir is not implemented yet");
}
