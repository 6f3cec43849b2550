// grpc.health.v1.Health: "" and every registered service report SERVING while
// the agent runs and NOT_SERVING once it is shutting down.
import type * as grpc from "@grpc/grpc-js";
import { addService, RpcError, Status } from "../../proto/rpc.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";

export class HealthState {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<(service: string, status: ServingStatus) => void>();

  constructor(services: string[]) {
    for (const s of ["", ...services]) this.statuses.set(s, ServingStatus.SERVING);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  setAll(status: ServingStatus): void {
    for (const s of this.statuses.keys()) {
      this.statuses.set(s, status);
      for (const w of this.watchers) w(s, status);
    }
  }

  all(): Map<string, ServingStatus> {
    return new Map(this.statuses);
  }

  watch(fn: (service: string, status: ServingStatus) => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }
}

export { ServingStatus };

export function addHealthService(server: grpc.Server, state: HealthState): void {
  addService(server, Health, {
    check: async (req) => {
      const status = state.get(req.service);
      if (status === undefined) throw new RpcError(Status.NOT_FOUND, `unknown service ${JSON.stringify(req.service)}`);
      return { status };
    },
    list: async () => {
      const statuses: Record<string, { status: ServingStatus }> = {};
      for (const [name, status] of state.all()) statuses[name] = { status };
      return { statuses };
    },
    watch: (req, call) =>
      new Promise<void>((resolve) => {
        const send = (status: ServingStatus | undefined) =>
          call.write({ status: status ?? ServingStatus.SERVICE_UNKNOWN });
        send(state.get(req.service));
        const unwatch = state.watch((service, status) => {
          if (service === req.service) send(status);
        });
        call.on("cancelled", () => {
          unwatch();
          resolve();
        });
      }),
  });
}
