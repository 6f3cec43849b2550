// Operations: liveness, readiness (naming what does not answer), metrics, OpenAPI.
import type { ApiApp, RouteContext } from "../server.js";

/** What /readyz asks: each dependency, undefined when it answers, else why not. */
export type ReadinessCheck = () => Promise<{ containerd: string | undefined; database: string | undefined }>;

export function registerOpsRoutes(app: ApiApp, ctx: RouteContext): void {
  app.get("/healthz", { config: { access: "public" }, schema: { summary: "The process is up", hide: false } }, async () => ({ status: "ok" }));

  app.get("/readyz", { config: { access: "public" }, schema: { summary: "containerd and the database answer" } }, async (_req, reply) => {
    const r = await ctx.readiness();
    const failing = Object.entries(r).filter(([, why]) => why !== undefined);
    if (failing.length === 0) return { status: "ready" };
    return reply.code(503).send({
      error: { code: "unavailable", message: failing.map(([what, why]) => `${what}: ${why}`).join("; ") },
      ...Object.fromEntries(failing),
    });
  });

  app.get("/metrics", { config: { access: "admin" }, schema: { summary: "Prometheus metrics" } }, async (_req, reply) => {
    const m = await ctx.metrics.render();
    return reply.type(m.contentType).send(m.body);
  });

  app.get("/openapi.json", { config: { access: "token" }, schema: { summary: "This API's OpenAPI 3.1 document", hide: true } }, async () => app.swagger());
}
