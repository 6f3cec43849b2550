// The mount points read from /proc/self/mountinfo: escapes decoded, names that are UTF-8 kept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseMountPoints, mountPoints } from "../../host/workspace/socket-dir.js";

test("mount points are field 5 of mountinfo with octal escapes decoded", () => {
  const text = [
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "731 22 0:63 / /var/lib/memoh/run/bot\\040one rw,nosuid,nodev,noexec - tmpfs memoh-socket rw,size=256k",
    "732 22 0:64 / /srv/caf\xc3\xa9\\011tab\\134slash rw - tmpfs x rw",
    "",
  ].join("\n");
  assert.deepEqual(parseMountPoints(text), ["/", "/var/lib/memoh/run/bot one", "/srv/café\ttab\\slash"]);
});

test("this process's own mount table has its root", () => {
  assert.ok(mountPoints().includes("/"));
});
