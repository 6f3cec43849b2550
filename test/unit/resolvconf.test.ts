import { after, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chooseResolvConf, FALLBACK_RESOLV_CONF } from "../../host/workspace/resolvconf.js";

const made: string[] = [];
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function files(host: string | undefined, upstream: string | undefined) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-resolv-"));
  made.push(dir);
  const h = path.join(dir, "host.conf");
  const u = path.join(dir, "upstream.conf");
  if (host !== undefined) fs.writeFileSync(h, host);
  if (upstream !== undefined) fs.writeFileSync(u, upstream);
  return { dir, candidates: { host: h, upstream: u } };
}

test("the host's resolv.conf when it names a non-loopback nameserver", () => {
  const f = files("search lan\nnameserver 192.168.1.1\n", "nameserver 9.9.9.9\n");
  assert.deepEqual(chooseResolvConf(path.join(f.dir, "data"), f.candidates), { source: f.candidates.host, kind: "host" });
});

test("systemd-resolved's upstream file when the host's points at the 127.0.0.53 stub", () => {
  const f = files("nameserver 127.0.0.53\noptions edns0\n", "nameserver 10.0.0.2\n");
  assert.deepEqual(chooseResolvConf(path.join(f.dir, "data"), f.candidates), { source: f.candidates.upstream, kind: "systemd-resolved" });
});

test("a world-readable fallback under the data root when neither is usable", () => {
  const f = files("nameserver 127.0.0.53\n", undefined);
  const dataRoot = path.join(f.dir, "data");
  const choice = chooseResolvConf(dataRoot, f.candidates);
  assert.equal(choice.kind, "fallback");
  assert.equal(choice.source, path.join(dataRoot, "resolv.conf"));
  assert.equal(fs.readFileSync(choice.source, "utf8"), FALLBACK_RESOLV_CONF);
  assert.equal(fs.statSync(choice.source).mode & 0o777, 0o644);
});
