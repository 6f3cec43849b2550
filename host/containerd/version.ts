// The daemon's version, also the cheapest "is containerd there?" probe.
import { Version } from "../../proto/gen/containerd/services/version/v1/version_pb.js";
import type { ContainerdConnection } from "./connection.js";

export interface DaemonVersion {
  version: string;
  revision: string;
}

export async function daemonVersion(conn: ContainerdConnection): Promise<DaemonVersion> {
  const res = await conn.unary(Version.method.version, {});
  return { version: res.version, revision: res.revision };
}
