// CDI: spec files from (test) dirs, fully-qualified names, container edits applied to the OCI spec.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CdiError, CdiRegistry, devMajorMinor, parseQualifiedName, withCdiDevices } from "../../host/containerd/cdi.js";
import { buildSpec, defaultUnixSpec } from "../../host/containerd/spec.js";

let dir: string;
let etc: string;
let run: string;
const devNull = devMajorMinor(fs.statSync("/dev/null").rdev);

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-cdi-"));
  etc = path.join(dir, "etc-cdi");
  run = path.join(dir, "run-cdi");
  fs.mkdirSync(etc);
  fs.mkdirSync(run);
  fs.writeFileSync(
    path.join(etc, "example.json"),
    JSON.stringify({
      cdiVersion: "0.6.0",
      kind: "example.com/device",
      containerEdits: { env: ["EXAMPLE_VENDOR=1"] },
      devices: [
        {
          name: "null0",
          containerEdits: {
            env: ["EXAMPLE_DEVICE=null0"],
            // No type/major/minor: taken from the host node.
            deviceNodes: [{ path: "/dev/example-null", hostPath: "/dev/null", permissions: "rw" }],
            mounts: [{ hostPath: "/usr/share", containerPath: "/opt/example", options: ["ro", "rbind"] }],
            hooks: [{ hookName: "createContainer", path: "/usr/bin/true", args: ["true", "hook"] }],
          },
        },
        { name: "stale", containerEdits: { env: ["EXAMPLE_STALE=etc"] } },
      ],
    }),
  );
  // The later dir wins for a device defined in both.
  fs.writeFileSync(
    path.join(run, "example-override.json"),
    JSON.stringify({
      cdiVersion: "0.6.0",
      kind: "example.com/device",
      devices: [{ name: "stale", containerEdits: { env: ["EXAMPLE_STALE=run"], deviceNodes: [{ path: "/dev/fixed", type: "c", major: 1, minor: 3 }] } }],
    }),
  );
  fs.writeFileSync(path.join(run, "gpu.yaml"), "cdiVersion: 0.6.0\nkind: example.com/gpu\ndevices: []\n");
  // A key given twice: YAML that does not parse is skipped, with the reason.
  fs.writeFileSync(path.join(run, "broken.yml"), "cdiVersion: 0.6.0\nkind: example.com/broken\nkind: example.com/other\ndevices: []\n");
  fs.writeFileSync(path.join(run, "README.txt"), "not a spec");
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const spec = () => defaultUnixSpec("memoh", "ws-1");

test("a device's and its spec's edits are applied: env, device node from the host, mount, hook", () => {
  const reg = CdiRegistry.load({ dirs: [etc, run] });
  assert.deepEqual(reg.list(), ["example.com/device=null0", "example.com/device=stale"]);
  const s = buildSpec(spec(), withCdiDevices(["example.com/device=null0"], reg));
  assert.ok(s.process.env.includes("EXAMPLE_VENDOR=1"));
  assert.ok(s.process.env.includes("EXAMPLE_DEVICE=null0"));
  assert.deepEqual(s.linux.devices, [{ path: "/dev/example-null", type: "c", major: devNull.major, minor: devNull.minor, fileMode: 0o666 }]);
  assert.deepEqual(s.linux.resources.devices?.at(-1), { allow: true, type: "c", major: 1, minor: 3, access: "rw" });
  assert.deepEqual(devNull, { major: 1, minor: 3 });
  assert.deepEqual(s.mounts.at(-1), { destination: "/opt/example", type: "bind", source: "/usr/share", options: ["ro", "rbind"] });
  assert.deepEqual(s.hooks?.createContainer, [{ path: "/usr/bin/true", args: ["true", "hook"] }]);
});

test("a device from a later dir overrides the same name from an earlier one; a broken spec file is skipped, said why", () => {
  const reg = CdiRegistry.load({ dirs: [etc, run] });
  const s = buildSpec(spec(), withCdiDevices(["example.com/device=stale"], reg));
  assert.ok(s.process.env.includes("EXAMPLE_STALE=run"));
  assert.ok(!s.process.env.includes("EXAMPLE_STALE=etc"));
  assert.deepEqual(s.linux.devices, [{ path: "/dev/fixed", type: "c", major: 1, minor: 3 }]);
  assert.deepEqual(
    reg.skipped.map((x) => path.basename(x.file)),
    ["broken.yml"],
  );
  assert.match(reg.skipped[0]!.reason, /broken\.yml: not valid YAML: Map keys must be unique at line 3/);
});

test("=all selects every device of the kind; spec-level edits are applied once", () => {
  const reg = CdiRegistry.load({ dirs: [etc] });
  const s = buildSpec(spec(), withCdiDevices(["example.com/device=all"], reg));
  assert.equal(s.process.env.filter((e) => e === "EXAMPLE_VENDOR=1").length, 1);
  assert.ok(s.process.env.includes("EXAMPLE_DEVICE=null0"));
  assert.ok(s.process.env.includes("EXAMPLE_STALE=etc"));
});

test("an unknown device is a clear error naming it and the known ones", () => {
  const reg = CdiRegistry.load({ dirs: [etc, run] });
  assert.throws(
    () => buildSpec(spec(), withCdiDevices(["example.com/device=gpu7"], reg)),
    (err) => {
      assert.ok(err instanceof CdiError);
      assert.equal(err.code, "unknown_device");
      assert.match(err.message, /CDI device "example\.com\/device=gpu7" is not known/);
      assert.match(err.message, /known devices: example\.com\/device=null0, example\.com\/device=stale/);
      return true;
    },
  );
  const empty = CdiRegistry.load({ dirs: [path.join(dir, "missing")] });
  assert.throws(() => empty.resolve(["example.com/device=null0"]), /known devices: \(none\)/);
});

test("names must be fully qualified", () => {
  assert.deepEqual(parseQualifiedName("nvidia.com/gpu=0"), { kind: "nvidia.com/gpu", device: "0" });
  for (const bad of ["gpu0", "example.com/device", "device=x", "example.com/device="]) {
    assert.throws(() => parseQualifiedName(bad), (err) => err instanceof CdiError && err.code === "invalid_name" && err.message.includes(bad));
  }
});

test("a device node whose host path is not a device is an error", () => {
  const reg = CdiRegistry.fromSpecs([
    { cdiVersion: "0.6.0", kind: "example.com/bad", devices: [{ name: "x", containerEdits: { deviceNodes: [{ path: "/dev/x", hostPath: "/etc/hostname" }] } }] },
  ]);
  assert.throws(() => buildSpec(spec(), withCdiDevices(["example.com/bad=x"], reg)), /\/etc\/hostname is not a device/);
});
