// The agent's background-job limits reach it through its environment in the workspace spec.
import { test } from "node:test";
import assert from "node:assert/strict";
import { defaultUnixSpec } from "../../host/containerd/spec.js";
import { withAgentProcess } from "../../host/workspace/container-spec.js";

test("withAgentProcess gives the agent BRIDGE_JOB_* when job limits are configured, nothing otherwise", () => {
  const scores = { agent: 0, children: 300 };
  const plain = defaultUnixSpec("ns", "ws-1");
  withAgentProcess("ws-1", scores)(plain);
  assert.equal(plain.process.env.some((e) => e.startsWith("BRIDGE_JOB_")), false);
  const configured = defaultUnixSpec("ns", "ws-1");
  withAgentProcess("ws-1", scores, { maxRuntimeMs: 600_000, retentionMs: 60_000 })(configured);
  assert.deepEqual(configured.process.env.filter((e) => e.startsWith("BRIDGE_JOB_")), ["BRIDGE_JOB_MAX_RUNTIME_MS=600000", "BRIDGE_JOB_RETENTION_MS=60000"]);
});
