import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function deleteFile(ctx: AgentContext, req: pb.DeleteFileRequest): Promise<MessageInitShape<typeof pb.DeleteFileResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "DeleteFile is not implemented yet");
}
