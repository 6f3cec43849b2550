// ExecStart.user / McpStdioStart.user: parsing and resolution against sample
// account files (pure), and real spawns as other users (the tests run as root).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { Status, rpcCode } from "../../proto/rpc.js";
import { lookupUser, MAX_ID, parseUserSpec, resolveUser, type ExecUser } from "../../agent/exec/user.js";
import { startTestAgent, type TestAgent } from "./helpers/agent.js";
import { runExec } from "./helpers/exec.js";
import { McpSession } from "./helpers/mcp.js";

const PASSWD = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
app:x:1000:1001:App User,,,:/home/app:/bin/sh
noh:x:1002:1002::/:/bin/sh
nohome:x:1003:1003:::/bin/sh
broken-line
bad-uid:x:abc:1:x:/x:/bin/sh
+nis::::::
dup:x:2000:2000::/first:/bin/sh
dup:x:2001:2001::/second:/bin/sh
`;
const GROUP = `root:x:0:
staff:x:50:app
app:x:1001:
docker:x:999:app
`;
const files = { passwd: PASSWD, group: GROUP };
const root = { uid: 0, gid: 0 };

function resolve(spec: string, f: { passwd: string | undefined; group: string | undefined } = files): ExecUser {
  return resolveUser(parseUserSpec(spec), f, root);
}

function invalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: Error) => {
    assert.equal(rpcCode(err), Status.INVALID_ARGUMENT, err.message);
    assert.match(err.message, message);
    return true;
  });
}

test("user specs: name, uid, name:group, uid:gid, name:gid, uid:group", () => {
  assert.deepEqual(resolve(""), { uid: 0, gid: 0, name: "root", home: "/root" });
  assert.deepEqual(resolve("app"), { uid: 1000, gid: 1001, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("1000"), { uid: 1000, gid: 1001, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("app:staff"), { uid: 1000, gid: 50, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("1000:999"), { uid: 1000, gid: 999, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("app:7"), { uid: 1000, gid: 7, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("1000:docker"), { uid: 1000, gid: 999, name: "app", home: "/home/app" });
  assert.deepEqual(resolve("daemon"), { uid: 1, gid: 1, name: "daemon", home: "/usr/sbin" });
  // The first entry of a name wins, as getpwnam's does.
  assert.deepEqual(resolve("dup"), { uid: 2000, gid: 2000, name: "dup", home: "/first" });
  assert.equal(resolve("nohome").home, "/", "an empty home field means /");
  // Empty: the agent's own uid and gid, whatever the passwd entry says; its home and name from there.
  assert.deepEqual(resolveUser(undefined, { passwd: "root:x:0:5::/r:/bin/sh\n", group: undefined }, root), { uid: 0, gid: 0, name: "root", home: "/r" });
});

test("a uid without a passwd entry runs with gid 0 (or the given gid), HOME / and its number as USER", () => {
  assert.deepEqual(resolve("4242"), { uid: 4242, gid: 0, name: "4242", home: "/" });
  assert.deepEqual(resolve("4242:77"), { uid: 4242, gid: 77, name: "4242", home: "/" });
  assert.deepEqual(resolve("4242:staff"), { uid: 4242, gid: 50, name: "4242", home: "/" });
  assert.deepEqual(resolve(String(MAX_ID)), { uid: MAX_ID, gid: 0, name: String(MAX_ID), home: "/" });
  // Missing files: numbers still work; root is root.
  const none = { passwd: undefined, group: undefined };
  assert.deepEqual(resolve("", none), { uid: 0, gid: 0, name: "root", home: "/" });
  assert.deepEqual(resolve("5:6", none), { uid: 5, gid: 6, name: "5", home: "/" });
});

test("names not found and malformed specs are INVALID_ARGUMENT naming the problem", () => {
  invalid(() => resolve("nosuch"), /^user nosuch not found in \/etc\/passwd$/);
  invalid(() => resolve("app:nosuch"), /^group nosuch not found in \/etc\/group$/);
  invalid(() => resolve("nosuch", { passwd: undefined, group: undefined }), /user nosuch not found in \/etc\/passwd \(the container has no \/etc\/passwd\)/);
  invalid(() => resolve("1000:staff", { passwd: PASSWD, group: undefined }), /group staff not found in \/etc\/group \(the container has no \/etc\/group\)/);
  // Lines that are not entries are not users.
  invalid(() => resolve("broken-line"), /user broken-line not found/);
  invalid(() => resolve("bad-uid"), /user bad-uid not found/);
  invalid(() => resolve("+nis"), /user \+nis not found/);
  invalid(() => parseUserSpec(":"), /empty user/);
  invalid(() => parseUserSpec(":0"), /empty user/);
  invalid(() => parseUserSpec("app:"), /empty group/);
  invalid(() => parseUserSpec("a:b:c"), /expected user or user:group/);
  invalid(() => parseUserSpec("4294967295"), /user id 4294967295 is out of range \(0\.\.4294967294\)/);
  invalid(() => parseUserSpec("1:99999999999999999999"), /group id 99999999999999999999 is out of range/);
  invalid(() => parseUserSpec("a b"), /contains whitespace/);
  invalid(() => parseUserSpec("app\0"), /control character/);
  invalid(() => parseUserSpec("../x"), /"\/"/);
  invalid(() => parseUserSpec("x".repeat(600)), /longer than 512/);
});

test("lookupUser reads the account files at each call; missing files are no error for numeric users", async () => {
  const etc = await fs.mkdtemp(path.join(t.root, "etc-"));
  assert.deepEqual(await lookupUser(parseUserSpec("77:88"), etc), { uid: 77, gid: 88, name: "77", home: "/" });
  await fs.writeFile(path.join(etc, "passwd"), PASSWD);
  await fs.writeFile(path.join(etc, "group"), GROUP);
  assert.deepEqual(await lookupUser(parseUserSpec("app:docker"), etc), { uid: 1000, gid: 999, name: "app", home: "/home/app" });
  await fs.appendFile(path.join(etc, "passwd"), "late:x:3000:3000::/home/late:/bin/sh\n");
  assert.equal((await lookupUser(parseUserSpec("late"), etc)).uid, 3000);
  // A FIFO must not hang the call; a directory is no passwd file.
  await fs.rm(path.join(etc, "passwd"));
  await fs.mkdir(path.join(etc, "passwd"));
  await assert.rejects(lookupUser(parseUserSpec("app"), etc), (err: Error) => {
    assert.equal(rpcCode(err), Status.FAILED_PRECONDITION);
    assert.match(err.message, /passwd is not a regular file/);
    return true;
  });
});

let t: TestAgent;
before(async () => {
  t = await startTestAgent();
});
after(async () => {
  await t.close();
});

const IDS = 'echo "$(id -u) $(id -g) [$(id -G)] $HOME $USER $LOGNAME"';

test("Exec as a uid:gid, as a name, and as root (empty); the user's HOME, USER and LOGNAME unless env sets them", async () => {
  const byIds = await runExec(t.client, { command: IDS, user: "12345:23456" });
  assert.equal(byIds.stdout.toString(), "12345 23456 [23456] / 12345 12345\n", byIds.stderr.toString());
  const byName = await runExec(t.client, { command: IDS, user: "nobody" });
  assert.equal(byName.stdout.toString(), "65534 65534 [65534] /nonexistent nobody nobody\n", byName.stderr.toString());
  const asRoot = await runExec(t.client, { command: IDS });
  assert.match(asRoot.stdout.toString(), /^0 0 \[0\] \/root root root\n$/);
  const overridden = await runExec(t.client, { command: IDS, user: "nobody", env: { HOME: "/tmp", USER: "me" } });
  assert.equal(overridden.stdout.toString(), "65534 65534 [65534] /tmp me nobody\n");
  // The largest uid: int32 on the way through Node, uid_t in the kernel.
  const maxId = await runExec(t.client, { argv: ["id", "-u"], user: String(MAX_ID) });
  assert.equal(maxId.stdout.toString(), `${MAX_ID}\n`, maxId.stderr.toString());
});

test("a process run as another user has none of the agent's supplementary groups, on pipes and on a pty", async () => {
  const saved = process.getgroups!();
  process.setgroups!([4, 27]);
  try {
    const rootGroups = await runExec(t.client, { argv: ["id", "-G"] });
    assert.equal(rootGroups.stdout.toString(), "0 4 27\n", "root (the agent's own user) keeps the agent's groups");
    const piped = await runExec(t.client, { argv: ["id", "-G"], user: "12345:23456" });
    assert.equal(piped.stdout.toString(), "23456\n");
    const pty = await runExec(t.client, { command: IDS, user: "12345:23456", pty: true });
    assert.equal(pty.stdout.toString(), "12345 23456 [23456] / 12345 12345\r\n");
    const groupsLine = (await fs.readFile("/proc/self/status", "utf8")).split("\n").find((l) => l.startsWith("Groups:"));
    assert.equal(groupsLine?.replace(/\s+/g, " ").trim(), "Groups: 4 27", "the agent's groups are back after the pty fork");
  } finally {
    process.setgroups!(saved);
  }
});

test("McpStdio runs as the user too", async () => {
  const mcp = new McpSession(t.client, { command: "id", args: ["-u"], user: "12345" });
  const exit = await mcp.done;
  assert.equal(exit.code, 0);
  assert.deepEqual(mcp.noise, ["12345"]);
  await assert.rejects(new McpSession(t.client, { command: "id", user: "no-such-user" }).done, (err: Error) => {
    assert.equal(rpcCode(err), Status.INVALID_ARGUMENT);
    assert.match(err.message, /user no-such-user not found in \/etc\/passwd/);
    return true;
  });
});

test("an unknown user or a malformed spec fails the Exec with INVALID_ARGUMENT before anything runs", async () => {
  const marker = path.join(t.dataDir, "ran");
  for (const [user, message] of [
    ["no-such-user", /user no-such-user not found in \/etc\/passwd/],
    ["nobody:no-such-group", /group no-such-group not found in \/etc\/group/],
    ["1:2:3", /expected user or user:group/],
    ["-1", /user "-1"|not found/],
    ["4294967295", /out of range/],
  ] as const) {
    await assert.rejects(runExec(t.client, { command: `touch ${marker}`, user }), (err: Error) => {
      assert.equal(rpcCode(err), Status.INVALID_ARGUMENT, `${user}: ${err.message}`);
      assert.match(err.message, message);
      return true;
    });
  }
  assert.equal(await fs.stat(marker).then(() => true, () => false), false);
});
