// Keeps a response's bytes in the file budget (budget.ts) until they have left
// the agent's hands: the lease a handler attached to its response with
// holdUntilSent() is released when grpc-js has written the message to the
// HTTP/2 stream, or when the call ends in any way (status sent, cancelled,
// connection lost), whichever comes first. A client that never reads its
// responses therefore keeps them counted, and the budget bounds them too.
import * as grpc from "@grpc/grpc-js";
import { takeResponseLease, type Lease } from "../budget.js";
import { ContainerService } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";

class LeaseReleasingCall extends grpc.ServerInterceptingCall {
  private readonly held = new Set<Lease>();

  constructor(next: grpc.ServerInterceptingCallInterface) {
    super(next, {
      start: (next) =>
        next({
          // grpc-js calls onCancel once at the end of every call, cancelled or not.
          onCancel: () => this.releaseAll(),
        }),
    });
  }

  override sendMessage(message: unknown, callback: () => void): void {
    const lease = takeResponseLease(message);
    if (!lease) {
      super.sendMessage(message, callback);
      return;
    }
    this.held.add(lease);
    super.sendMessage(message, () => {
      this.held.delete(lease);
      lease.release();
      callback();
    });
  }

  private releaseAll(): void {
    for (const lease of this.held) lease.release();
    this.held.clear();
  }
}

/** Methods whose responses may carry a lease (unary: a stream's handler tracks its own). */
const LEASING_METHODS = new Set([`/${ContainerService.typeName}/${ContainerService.method.readFile.name}`]);

/** The server interceptor (ServerOptions.interceptors) that releases response leases. */
export const releaseResponseLeases: grpc.ServerInterceptor = (method, call) =>
  LEASING_METHODS.has(method.path) ? new LeaseReleasingCall(call) : new grpc.ServerInterceptingCall(call);
