import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function listDir(ctx: AgentContext, req: pb.ListDirRequest): Promise<MessageInitShape<typeof pb.ListDirResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "ListDir is not implemented yet");
}
