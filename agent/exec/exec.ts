import type * as grpc from "@grpc/grpc-js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { AgentContext } from "../context.js";
import { RpcError, Status } from "../errors.js";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

export async function exec(
  ctx: AgentContext,
  call: grpc.ServerDuplexStream<pb.ExecRequest, MessageInitShape<typeof pb.ExecResponseSchema>>,
): Promise<void> {
  void ctx; void call;
  throw new RpcError(Status.UNIMPLEMENTED, "Exec is not implemented yet");
}
