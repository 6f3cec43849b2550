import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function readRaw(
  ctx: AgentContext,
  req: pb.ReadRawRequest,
  call: grpc.ServerWritableStream<pb.ReadRawRequest, MessageInitShape<typeof pb.ReadRawChunkSchema>>,
): Promise<void> {
  void ctx; void req; void call;
  throw new RpcError(Status.UNIMPLEMENTED, "ReadRaw is not implemented yet");
}
