import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function readFile(ctx: AgentContext, req: pb.ReadFileRequest): Promise<MessageInitShape<typeof pb.ReadFileResponseSchema>> {
  void ctx; void req;
  throw new RpcError(Status.UNIMPLEMENTED, "ReadFile is not implemented yet");
}
