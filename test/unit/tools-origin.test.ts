// DNS-rebinding protection of the tool gateway: which Host and Origin headers pass.
import { test } from "node:test";
import assert from "node:assert/strict";
import { hostOrOriginProblem } from "../../host/tools/origin.js";

const none = { allowedHostnames: [] };

test("loopback names and IP literals pass as Host; other names do not unless configured", () => {
  for (const host of ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "localhost", "10.1.2.3:8080", "[fd00::1]:80", "app.localhost:1"]) {
    assert.equal(hostOrOriginProblem(host, null, none), undefined, host);
  }
  assert.match(hostOrOriginProblem("evil.example:8080", null, none)!, /host name evil\.example is not allowed/);
  assert.equal(hostOrOriginProblem("Tools.Example.COM", null, { allowedHostnames: ["tools.example.com"] }), undefined);
  assert.match(hostOrOriginProblem(null, null, none)!, /no Host header/);
  assert.match(hostOrOriginProblem("a b", null, none)!, /not a host name/);
});

test("an Origin must be a loopback name, the Host's own name, or configured", () => {
  assert.equal(hostOrOriginProblem("127.0.0.1:8080", "http://localhost:3000", none), undefined);
  assert.equal(hostOrOriginProblem("10.0.0.5:8080", "http://10.0.0.5:8080", none), undefined);
  assert.match(hostOrOriginProblem("127.0.0.1:8080", "http://evil.example", none)!, /origin http:\/\/evil\.example are not allowed/);
  assert.match(hostOrOriginProblem("127.0.0.1:8080", "http://10.0.0.9", none)!, /not allowed/);
  assert.match(hostOrOriginProblem("127.0.0.1:8080", "null", none)!, /not allowed|not an origin/);
  assert.equal(hostOrOriginProblem("127.0.0.1:8080", "https://chat.example", { allowedHostnames: ["chat.example"] }), undefined);
});
