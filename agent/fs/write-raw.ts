import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function writeRaw(
  ctx: AgentContext,
  call: grpc.ServerReadableStream<pb.WriteRawRequest, MessageInitShape<typeof pb.WriteRawResponseSchema>>,
): Promise<MessageInitShape<typeof pb.WriteRawResponseSchema>> {
  void ctx; void call;
  throw new RpcError(Status.UNIMPLEMENTED, "WriteRaw is not implemented yet");
}
