// CDI spec files in YAML, as `nvidia-ctk cdi generate` writes them, are read
// like JSON ones: same devices, same validation, same edits applied to the spec.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CdiError, CdiRegistry, devMajorMinor, readCdiSpecFile, withCdiDevices } from "../../host/containerd/cdi.js";
import { buildSpec, defaultUnixSpec } from "../../host/containerd/spec.js";

// The layout and key order of nvidia-ctk's output (a leading "---", block
// sequences not indented under their key, device names quoted when numeric).
// The device nodes name a host path that exists here, as nvidia-ctk does with
// --dev-root, so the test needs no GPU.
const NVIDIA_YAML = `---
cdiVersion: 0.5.0
containerEdits:
  deviceNodes:
  - hostPath: /dev/null
    path: /dev/nvidiactl
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  hooks:
  - args:
    - nvidia-cdi-hook
    - create-symlinks
    - --link
    - libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  - args:
    - nvidia-cdi-hook
    - update-ldcache
    - --folder
    - /usr/lib/x86_64-linux-gnu
    hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
  mounts:
  - containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    options:
    - ro
    - nosuid
    - nodev
    - bind
devices:
- containerEdits:
    deviceNodes:
    - hostPath: /dev/zero
      path: /dev/nvidia0
      permissions: rw
  name: "0"
- containerEdits:
    deviceNodes:
    - hostPath: /dev/zero
      path: /dev/nvidia0
      permissions: rw
  name: GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c
- containerEdits:
    deviceNodes:
    - hostPath: /dev/zero
      path: /dev/nvidia0
      permissions: rw
    mounts:
    - containerPath: /dev/shm/nvidia
      hostPath: /tmp
      options: [rbind, rw]
  name: all
kind: nvidia.com/gpu
`;

/** The same spec as JSON: what the YAML file must be read as. */
const NVIDIA_JSON = {
  cdiVersion: "0.5.0",
  containerEdits: {
    deviceNodes: [{ hostPath: "/dev/null", path: "/dev/nvidiactl" }],
    env: ["NVIDIA_VISIBLE_DEVICES=void"],
    hooks: [
      { args: ["nvidia-cdi-hook", "create-symlinks", "--link", "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"], hookName: "createContainer", path: "/usr/bin/nvidia-cdi-hook" },
      { args: ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/lib/x86_64-linux-gnu"], hookName: "createContainer", path: "/usr/bin/nvidia-cdi-hook" },
    ],
    mounts: [
      {
        containerPath: "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05",
        hostPath: "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05",
        options: ["ro", "nosuid", "nodev", "bind"],
      },
    ],
  },
  devices: [
    { containerEdits: { deviceNodes: [{ hostPath: "/dev/zero", path: "/dev/nvidia0", permissions: "rw" }] }, name: "0" },
    { containerEdits: { deviceNodes: [{ hostPath: "/dev/zero", path: "/dev/nvidia0", permissions: "rw" }] }, name: "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c" },
    {
      containerEdits: {
        deviceNodes: [{ hostPath: "/dev/zero", path: "/dev/nvidia0", permissions: "rw" }],
        mounts: [{ containerPath: "/dev/shm/nvidia", hostPath: "/tmp", options: ["rbind", "rw"] }],
      },
      name: "all",
    },
  ],
  kind: "nvidia.com/gpu",
};

let dir: string;
let yamlDir: string;
let jsonDir: string;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-cdi-yaml-"));
  yamlDir = path.join(dir, "yaml");
  jsonDir = path.join(dir, "json");
  fs.mkdirSync(yamlDir);
  fs.mkdirSync(jsonDir);
  fs.writeFileSync(path.join(yamlDir, "nvidia.yaml"), NVIDIA_YAML);
  fs.writeFileSync(path.join(jsonDir, "nvidia.json"), JSON.stringify(NVIDIA_JSON, null, 2));
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const spec = () => defaultUnixSpec("memoh", "ws-gpu");

test("an nvidia-ctk YAML spec is read as the same spec as its JSON form", () => {
  assert.deepEqual(readCdiSpecFile(path.join(yamlDir, "nvidia.yaml")), readCdiSpecFile(path.join(jsonDir, "nvidia.json")));
  const reg = CdiRegistry.load({ dirs: [yamlDir] });
  assert.deepEqual(reg.skipped, []);
  assert.deepEqual(reg.list(), ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "nvidia.com/gpu=all"]);
});

test("a device of the YAML spec is applied to the OCI spec exactly as from the JSON file", () => {
  const fromYaml = CdiRegistry.load({ dirs: [yamlDir] });
  const fromJson = CdiRegistry.load({ dirs: [jsonDir] });
  for (const device of ["nvidia.com/gpu=0", "nvidia.com/gpu=all"]) {
    assert.deepEqual(buildSpec(spec(), withCdiDevices([device], fromYaml)), buildSpec(spec(), withCdiDevices([device], fromJson)), device);
  }

  const s = buildSpec(spec(), withCdiDevices(["nvidia.com/gpu=0"], fromYaml));
  const nullDev = devMajorMinor(fs.statSync("/dev/null").rdev);
  const zeroDev = devMajorMinor(fs.statSync("/dev/zero").rdev);
  assert.ok(s.process.env.includes("NVIDIA_VISIBLE_DEVICES=void"));
  assert.deepEqual(s.linux.devices, [
    { path: "/dev/nvidiactl", type: "c", ...nullDev, fileMode: 0o666 },
    { path: "/dev/nvidia0", type: "c", ...zeroDev, fileMode: 0o666 },
  ]);
  assert.deepEqual(s.linux.resources.devices?.slice(-2), [
    { allow: true, type: "c", ...nullDev, access: "rwm" },
    { allow: true, type: "c", ...zeroDev, access: "rw" },
  ]);
  assert.deepEqual(s.mounts.at(-1), {
    destination: "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05",
    type: "bind",
    source: "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05",
    options: ["ro", "nosuid", "nodev", "bind"],
  });
  assert.deepEqual(s.hooks?.createContainer?.map((h) => h.args?.[1]), ["create-symlinks", "update-ldcache"]);
  assert.equal(s.hooks?.createContainer?.[0]?.path, "/usr/bin/nvidia-cdi-hook");
});

test("YAML gets the same validation: an unquoted numeric name, a wrong type, a second document", () => {
  const cases: Array<[string, string, RegExp]> = [
    // YAML reads `name: 0` as a number; the name must be a string, as in JSON.
    ["numeric-name.yaml", NVIDIA_YAML.replace('name: "0"', "name: 0"), /devices\[0\]\.name: expected a non-empty string/],
    ["bad-permissions.yml", NVIDIA_YAML.replace("permissions: rw\n  name: \"0\"", "permissions: rwx\n  name: \"0\""), /deviceNodes\[0\]\.permissions: expected letters of "rwm"/],
    ["env-map.yaml", NVIDIA_YAML.replace("  env:\n  - NVIDIA_VISIBLE_DEVICES=void", "  env:\n    NVIDIA_VISIBLE_DEVICES: void"), /containerEdits\.env: expected an array of strings/],
    ["two-docs.yaml", `${NVIDIA_YAML}---\ncdiVersion: 0.5.0\nkind: other.com/x\ndevices: []\n`, /not valid YAML: 2 YAML documents in it; a spec file holds one/],
    ["empty.yaml", "", /not valid YAML: 0 YAML documents/],
    ["list.yaml", "- a\n- b\n", /a CDI spec must be an object/],
  ];
  const bad = path.join(dir, "bad");
  fs.mkdirSync(bad);
  for (const [name, text, why] of cases) {
    const file = path.join(bad, name);
    fs.writeFileSync(file, text);
    assert.throws(() => readCdiSpecFile(file), (err: unknown) => err instanceof CdiError && err.code === "invalid_spec" && why.test(err.message) && err.message.includes(file), name);
  }
  const reg = CdiRegistry.load({ dirs: [bad] });
  assert.deepEqual(reg.list(), [], "no device from an invalid file");
  assert.deepEqual(reg.skipped.map((x) => path.basename(x.file)).sort(), cases.map(([name]) => name).sort());
});
