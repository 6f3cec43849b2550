// The mount points read from /proc/self/mountinfo: escapes decoded, names that are UTF-8
// kept, symlinks resolved before a path is looked up.
import { test } from "node:test";
import assert from "node:assert/strict";
import { isMountPoint, mountPoints, parseMountPoints } from "../../host/containerd/snapshots.js";

test("mount points are field 5 of mountinfo with octal escapes decoded", () => {
  const text = [
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "731 22 0:63 / /var/lib/memoh/run/bot\\040one rw,nosuid,nodev,noexec - tmpfs memoh-socket rw,size=256k",
    "732 22 0:64 / /srv/caf\xc3\xa9\\011tab\\134slash rw - tmpfs x rw",
    "",
  ].join("\n");
  assert.deepEqual(parseMountPoints(text), ["/", "/var/lib/memoh/run/bot one", "/srv/café\ttab\\slash"]);
});

test("this process's own mount table has its root and /proc; a path through a symlink to a mount point is one", async () => {
  const fs = await import("node:fs");
  const os = await import("node:os");
  const path = await import("node:path");
  assert.ok(mountPoints().includes("/"));
  assert.ok(mountPoints().includes("/proc"));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mountinfo-"));
  try {
    fs.symlinkSync("/proc", path.join(dir, "to-proc"));
    fs.mkdirSync(path.join(dir, "plain"));
    assert.equal(isMountPoint(path.join(dir, "to-proc")), true);
    assert.equal(isMountPoint(path.join(dir, "plain")), false);
    assert.equal(isMountPoint(path.join(dir, "missing")), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
