// Registry credentials: where they come from (a Docker-style config.json), how
// a registry asks for them (WWW-Authenticate challenges, Basic or Bearer), and
// where they may go. Credentials travel over HTTPS to the registry's own host or
// to the token realm it names, and over plain HTTP only to an insecure
// registry's own host; never in clear text to any other host.
import fs from "node:fs";
import { ContainerdError } from "./errors.js";

export interface Credentials {
  username: string;
  password: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads `auths` from a Docker-style config.json: base64 `auth` or `username`/`password`, keyed by registry host. */
export function loadDockerConfig(file: string): Record<string, Credentials> {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new ContainerdError("invalid_argument", `registry auth file ${file}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const out: Record<string, Credentials> = {};
  if (!isRecord(json) || json.auths === undefined) return out;
  if (!isRecord(json.auths)) throw new ContainerdError("invalid_argument", `registry auth file ${file}: "auths" is not an object`);
  for (const [key, entry] of Object.entries(json.auths)) {
    if (!isRecord(entry)) continue;
    let creds: Credentials | undefined;
    if (typeof entry.auth === "string" && entry.auth !== "") {
      const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon < 0) throw new ContainerdError("invalid_argument", `registry auth file ${file}: auths.${key}.auth is not base64 "user:password"`);
      creds = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    } else if (typeof entry.username === "string" && typeof entry.password === "string") {
      creds = { username: entry.username, password: entry.password };
    }
    if (creds) out[authKeyHost(key)] = creds;
  }
  return out;
}

/** "https://index.docker.io/v1/" → "docker.io"; "http://127.0.0.1:5000" → "127.0.0.1:5000". */
function authKeyHost(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//, "").replace(/\/.*$/, "");
  return host === "index.docker.io" || host === "registry-1.docker.io" ? "docker.io" : host;
}

export function basicAuthorization(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString("base64")}`;
}

// ---------------------------------------------------------------- challenges

export interface Challenge {
  /** Lower case: "bearer", "basic". */
  scheme: string;
  /** Parameter names in lower case, values unquoted. */
  params: Record<string, string>;
  /** The token68 form (`Negotiate abc==`), when the challenge has one instead of parameters. */
  token68?: string;
}

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;
const SPACES = /[ \t]*/y;
const SEPARATORS = /[ \t,]*/y;
const QUOTED = /"((?:[^"\\]|\\.)*)"/y;
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))/y;
/** An unquoted parameter value: RFC 9110 wants a token, registries write URLs (`realm=https://…`) too. */
const BARE_VALUE = /[^\s,"=][^\s,"]*/y;

function matchAt(re: RegExp, s: string, at: number): RegExpExecArray | null {
  re.lastIndex = at;
  return re.exec(s);
}

/** `name = value` at `at` (value a token or a quoted string): the pair and where it ends, or undefined. */
function paramAt(s: string, at: number): { name: string; value: string; end: number } | undefined {
  const name = matchAt(TOKEN, s, at);
  if (!name) return undefined;
  let i = at + name[0].length;
  i += matchAt(SPACES, s, i)![0].length;
  if (s[i] !== "=") return undefined;
  i += 1;
  i += matchAt(SPACES, s, i)![0].length;
  const quoted = matchAt(QUOTED, s, i);
  if (quoted) return { name: name[0].toLowerCase(), value: quoted[1]!.replace(/\\(.)/g, "$1"), end: i + quoted[0].length };
  const bare = matchAt(BARE_VALUE, s, i);
  if (bare) return { name: name[0].toLowerCase(), value: bare[0], end: i + bare[0].length };
  return undefined;
}

/**
 * Parses a WWW-Authenticate header (RFC 9110 §11.6.1): one or more challenges,
 * each a scheme with comma-separated parameters or a token68, e.g.
 * `Bearer realm="https://auth/token",scope="repository:a:pull,push", Basic realm="r"`.
 * Commas inside quoted values belong to the value. Text that is not a
 * challenge is skipped up to the next comma.
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let current: Challenge | undefined;
  let i = 0;
  while (i < header.length) {
    i += matchAt(SEPARATORS, header, i)![0].length;
    if (i >= header.length) break;
    const param = current && current.token68 === undefined ? paramAt(header, i) : undefined;
    if (current && param) {
      current.params[param.name] = param.value;
      i = param.end;
      continue;
    }
    const scheme = matchAt(TOKEN, header, i);
    const afterScheme = scheme ? i + scheme[0].length : i;
    if (!scheme || (afterScheme < header.length && !/[ \t,]/.test(header[afterScheme]!))) {
      // Not a challenge: skip to the next comma outside quotes.
      current = undefined;
      const rest = /(?:[^,"]|"(?:[^"\\]|\\.)*"?)*/y;
      i += Math.max(1, matchAt(rest, header, i)![0].length);
      continue;
    }
    current = { scheme: scheme[0].toLowerCase(), params: {} };
    out.push(current);
    i = afterScheme + matchAt(SPACES, header, afterScheme)![0].length;
    if (paramAt(header, i) === undefined) {
      const token68 = matchAt(TOKEN68, header, i);
      if (token68) {
        current.token68 = token68[0];
        i += token68[0].length;
      }
    }
  }
  return out;
}

/** The challenge to answer: Bearer when offered (a token scoped to the pull), else Basic; undefined when neither is. */
export function chooseChallenge(challenges: readonly Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === "bearer") ?? challenges.find((c) => c.scheme === "basic");
}

// ---------------------------------------------------------------- where credentials may go

/**
 * Why the credentials of the registry `registryHost` (host[:port] as in image
 * references) must not be sent to `target`, or undefined when they may.
 * `target` is the registry's own URL or the token realm its challenge named:
 * HTTPS is fine for both; plain HTTP only to the registry's own host:port, and
 * only when that registry is insecure (loopback or configured), where plain
 * HTTP is already what its pulls use.
 */
export function credentialsRefusal(target: URL, registryHost: string, registryInsecure: boolean): string | undefined {
  if (target.protocol === "https:") return undefined;
  if (target.protocol !== "http:") return `${target.origin} is not HTTP(S)`;
  const own = new URL(`http://${registryHost}`).host;
  if (target.host !== own) return `${target.origin} is plain HTTP on a host other than the registry's own (${own})`;
  if (!registryInsecure) return `${target.origin} is plain HTTP and ${registryHost} is not an insecure registry`;
  return undefined;
}
