// The user a spawned process runs as (ExecStart.user, McpStdioStart.user), with
// the rules of Docker and runc:
//
//   ""             the agent's own user: root in a workspace
//   "name"         /etc/passwd entry by name; a name not found is an error
//   "uid"          a number is always a uid; without a passwd entry it still
//                  runs, with gid 0 and HOME "/"
//   "user:group"   user as above; group a gid (any number) or a name from
//                  /etc/group (not found: an error)
//
// Without a group, the gid is the passwd entry's. The files are the container's
// own and are read at each call (a package install may add users); either may
// be missing. The workspace's root controls them, so they are opened without
// blocking (a FIFO there must not hang the call) and must be regular files of
// bounded size.
import fs from "node:fs/promises";
import path from "node:path";
import { failedPrecondition, invalidArgument, RpcError, Status } from "../errors.js";

/** Largest uid or gid: 2^32 - 1 is (uid_t)-1, "no change" to setuid/chown. */
export const MAX_ID = 2 ** 32 - 2;
/** Longest user spec accepted. */
const MAX_USER_SPEC_LENGTH = 512;
/** /etc/passwd or /etc/group larger than this is refused rather than read. */
const MAX_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024;

export type IdRef = { id: number } | { name: string };

export interface UserSpec {
  user: IdRef;
  group: IdRef | undefined;
}

export interface ExecUser {
  uid: number;
  gid: number;
  /** USER and LOGNAME: the passwd name, or the uid when there is no entry. */
  name: string;
  /** The passwd entry's home, "/" without one. */
  home: string;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
}

/** A decimal id: its value, "range" when it is above MAX_ID, undefined when the text is not a number. */
function parseId(text: string): number | "range" | undefined {
  if (!/^[0-9]+$/.test(text)) return undefined;
  const n = Number(text);
  return n <= MAX_ID ? n : "range";
}

/** An id field of an account file, when it is a valid id. */
function accountId(text: string | undefined): number | undefined {
  const id = text === undefined ? undefined : parseId(text);
  return typeof id === "number" ? id : undefined;
}

function parseRef(text: string, field: "user" | "group", spec: string): IdRef {
  if (text === "") throw invalidArgument(`user ${JSON.stringify(spec)}: empty ${field}`);
  const id = parseId(text);
  if (id === "range") throw invalidArgument(`user ${JSON.stringify(spec)}: ${field} id ${text} is out of range (0..${MAX_ID})`);
  if (id !== undefined) return { id };
  // Account names never hold whitespace, control characters or "/".
  if (/[\s\x00-\x1f\x7f/]/.test(text)) {
    throw invalidArgument(`user ${JSON.stringify(spec)}: ${field} name ${JSON.stringify(text)} contains whitespace, a control character or "/"`);
  }
  return { name: text };
}

/** Validates a user spec; undefined for "" (the agent's own user). Throws INVALID_ARGUMENT. */
export function parseUserSpec(spec: string): UserSpec | undefined {
  if (spec === "") return undefined;
  if (spec.length > MAX_USER_SPEC_LENGTH) throw invalidArgument(`user is longer than ${MAX_USER_SPEC_LENGTH} characters`);
  const parts = spec.split(":");
  if (parts.length > 2) throw invalidArgument(`user ${JSON.stringify(spec)}: expected user or user:group`);
  return {
    user: parseRef(parts[0]!, "user", spec),
    group: parts.length === 2 ? parseRef(parts[1]!, "group", spec) : undefined,
  };
}

/** Entries of /etc/passwd (name:x:uid:gid:gecos:home:shell); malformed lines are skipped, as libc does. */
export function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7 || f[0] === "" || line.startsWith("#") || line.startsWith("+") || line.startsWith("-")) continue;
    const uid = accountId(f[2]);
    const gid = accountId(f[3]);
    if (uid === undefined || gid === undefined) continue;
    entries.push({ name: f[0]!, uid, gid, home: f[5]! });
  }
  return entries;
}

/** Entries of /etc/group (name:x:gid:members). */
export function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 4 || f[0] === "" || line.startsWith("#") || line.startsWith("+") || line.startsWith("-")) continue;
    const gid = accountId(f[2]);
    if (gid === undefined) continue;
    entries.push({ name: f[0]!, gid });
  }
  return entries;
}

export interface AccountFiles {
  /** /etc/passwd's text; undefined when the file does not exist. */
  passwd: string | undefined;
  /** /etc/group's text; undefined when the file does not exist. */
  group: string | undefined;
}

/**
 * Resolves a user spec against the account files (pure). `self` is the agent's
 * own uid/gid, used for the empty spec. Throws INVALID_ARGUMENT naming what is
 * not found.
 */
export function resolveUser(spec: UserSpec | undefined, files: AccountFiles, self: { uid: number; gid: number }): ExecUser {
  const users = files.passwd === undefined ? [] : parsePasswd(files.passwd);
  const userRef: IdRef = spec?.user ?? { id: self.uid };
  let entry: PasswdEntry | undefined;
  if ("id" in userRef) {
    entry = users.find((u) => u.uid === userRef.id);
  } else {
    entry = users.find((u) => u.name === userRef.name);
    if (!entry) {
      const why = files.passwd === undefined ? " (the container has no /etc/passwd)" : "";
      throw invalidArgument(`user ${userRef.name} not found in /etc/passwd${why}`);
    }
  }
  const uid = entry?.uid ?? ("id" in userRef ? userRef.id : 0);

  let gid: number;
  const groupRef = spec?.group;
  if (spec === undefined) {
    gid = self.gid;
  } else if (groupRef === undefined) {
    gid = entry?.gid ?? 0;
  } else if ("id" in groupRef) {
    gid = groupRef.id;
  } else {
    const group = (files.group === undefined ? [] : parseGroup(files.group)).find((g) => g.name === groupRef.name);
    if (!group) {
      const why = files.group === undefined ? " (the container has no /etc/group)" : "";
      throw invalidArgument(`group ${groupRef.name} not found in /etc/group${why}`);
    }
    gid = group.gid;
  }

  const name = entry?.name ?? (uid === 0 ? "root" : String(uid));
  return { uid, gid, name, home: entry?.home || "/" };
}

/** A small regular file's text; undefined when it does not exist. */
async function readAccountFile(file: string): Promise<string | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new RpcError(Status.FAILED_PRECONDITION, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw failedPrecondition(`${file} is not a regular file`);
    if (st.size > MAX_ACCOUNT_FILE_BYTES) throw failedPrecondition(`${file} is larger than ${MAX_ACCOUNT_FILE_BYTES} bytes`);
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}

/** The user a process runs as, from the container's account files in `etcDir`. */
export async function lookupUser(spec: UserSpec | undefined, etcDir = "/etc"): Promise<ExecUser> {
  const [passwd, group] = await Promise.all([
    readAccountFile(path.join(etcDir, "passwd")),
    spec?.group !== undefined && "name" in spec.group ? readAccountFile(path.join(etcDir, "group")) : undefined,
  ]);
  return resolveUser(spec, { passwd, group }, agentIdentity());
}

/** The agent's own uid and gid. */
export function agentIdentity(): { uid: number; gid: number } {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

/**
 * The uid/gid to hand to spawn, or undefined when the process runs as the agent
 * itself (nothing to switch; the agent's supplementary groups stay, as before).
 * Node and node-pty take int32: ids above 2^31 - 1 are passed as their
 * two's-complement value, which libuv and setuid(2) read back as the uid_t.
 *
 * Switching drops every supplementary group: libuv calls setgroups(0) before
 * setgid/setuid, and the PTY path clears them around its fork (pty.ts).
 * Throws PERMISSION_DENIED when the agent is not root and cannot switch.
 */
export function spawnIds(user: ExecUser): { uid: number; gid: number } | undefined {
  const self = agentIdentity();
  if (user.uid === self.uid && user.gid === self.gid) return undefined;
  if (self.uid !== 0) {
    throw new RpcError(Status.PERMISSION_DENIED, `the agent runs as uid ${self.uid}: it cannot run a process as ${user.uid}:${user.gid}`);
  }
  return { uid: user.uid | 0, gid: user.gid | 0 };
}
