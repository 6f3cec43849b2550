// Path rules of ContainerService: relative paths resolve against the data dir,
// absolute paths are used as they are (the agent is root in its own container).
import path from "node:path";
import { invalidArgument } from "./errors.js";
import { MAX_PATH_LENGTH } from "./limits.js";

/** Validates a request path and returns it absolute. `field` names it in errors. */
export function resolvePath(dataDir: string, p: unknown, field = "path"): string {
  if (typeof p !== "string" || p.length === 0) throw invalidArgument(`${field} is empty`);
  if (p.includes("\0")) throw invalidArgument(`${field} contains a NUL byte`);
  if (p.length > MAX_PATH_LENGTH) throw invalidArgument(`${field} is longer than ${MAX_PATH_LENGTH} characters`);
  return path.resolve(dataDir, p);
}

/** Like resolvePath, but an empty value means the data dir itself (cwd fields). */
export function resolveDir(dataDir: string, p: string, field = "cwd"): string {
  return p === "" ? dataDir : resolvePath(dataDir, p, field);
}
