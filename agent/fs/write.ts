import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function writeFile(ctx: AgentContext, req: pb.WriteFileRequest): Promise<MessageInitShape<typeof pb.WriteFileResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "WriteFile is not implemented yet");
}
