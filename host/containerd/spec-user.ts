// A process user for an OCI spec: "name", "uid", "name:group" or "uid:gid",
// resolved against the image's /etc/passwd and /etc/group as runc and containerd do.
// withUser and withImageConfig (spec.ts) use it.

export interface PasswdFiles {
  /** Contents of the image's /etc/passwd. */
  passwd?: string;
  /** Contents of the image's /etc/group. */
  group?: string;
}

function lookupId(file: string | undefined, name: string, idField: number): number | undefined {
  for (const line of (file ?? "").split("\n")) {
    const fields = line.split(":");
    if (fields[0] === name && fields[idField] !== undefined && /^\d+$/.test(fields[idField]!)) return Number(fields[idField]);
  }
  return undefined;
}

/**
 * Parses an image's User ("uid", "uid:gid", "name", "name:group"). Names are
 * resolved only through `files` (the image's /etc/passwd and /etc/group); without
 * them a name is an error that says so.
 */
export function parseUser(user: string, files: PasswdFiles = {}): { uid: number; gid: number } {
  const [u = "", g] = user.split(":", 2);
  let uid: number;
  let gidFromPasswd: number | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gidFromPasswd = lookupPasswdGidByUid(files.passwd, uid);
  } else {
    const found = lookupId(files.passwd, u, 2);
    if (found === undefined) {
      throw new Error(`image user "${user}": user name "${u}" ${files.passwd === undefined ? "cannot be resolved without the image's /etc/passwd (use a numeric uid)" : "is not in the image's /etc/passwd"}`);
    }
    uid = found;
    gidFromPasswd = lookupId(files.passwd, u, 3);
  }
  if (g === undefined || g === "") return { uid, gid: gidFromPasswd ?? (/^\d+$/.test(u) ? 0 : uid) };
  if (/^\d+$/.test(g)) return { uid, gid: Number(g) };
  const gid = lookupId(files.group, g, 2);
  if (gid === undefined) {
    throw new Error(`image user "${user}": group name "${g}" ${files.group === undefined ? "cannot be resolved without the image's /etc/group (use a numeric gid)" : "is not in the image's /etc/group"}`);
  }
  return { uid, gid };
}

function lookupPasswdGidByUid(passwd: string | undefined, uid: number): number | undefined {
  for (const line of (passwd ?? "").split("\n")) {
    const f = line.split(":");
    if (f[2] === String(uid) && f[3] !== undefined && /^\d+$/.test(f[3])) return Number(f[3]);
  }
  return undefined;
}
