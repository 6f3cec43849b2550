// Namespaces: every object containerd keeps lives in one; ours is created on first use.
import { Namespaces } from "../../proto/gen/containerd/services/namespaces/v1/namespace_pb.js";
import type { ContainerdConnection } from "./connection.js";
import { isAlreadyExists } from "./errors.js";

/** Creates `name` (default: the connection's namespace) unless it exists; labels apply only on creation. */
export async function ensureNamespace(conn: ContainerdConnection, name = conn.namespace, labels: Record<string, string> = {}): Promise<void> {
  try {
    await conn.unary(Namespaces.method.create, { namespace: { name, labels } });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
}

export async function listNamespaces(conn: ContainerdConnection): Promise<string[]> {
  const res = await conn.unary(Namespaces.method.list, {});
  return res.namespaces.map((n) => n.name).sort();
}
