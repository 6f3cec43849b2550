// Grep: the lines of files under a path that match a regular expression,
// found by the agent itself (images without a shell or grep work alike).
// Bounded: a deadline (the regular expression runs in a vm context with a
// timeout, so a pattern that backtracks forever is stopped too), a result
// cap, a cap on the bytes of returned lines, and a cap on entries walked.
import fs from "node:fs/promises";
import type { Stats } from "node:fs";
import path from "node:path";
import vm from "node:vm";
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { errnoAt, invalidArgument } from "../errors.js";
import { BINARY_SNIFF_BYTES, MiB } from "../limits.js";
import { resolveDir } from "../paths.js";
import { compileGlob } from "./glob-match.js";
import { walk } from "./walk.js";

export const GREP_DEFAULT_RESULTS = 200;
export const GREP_MAX_RESULTS = 5000;
export const SEARCH_DEFAULT_TIMEOUT_MS = 10_000;
export const SEARCH_MAX_TIMEOUT_MS = 60_000;
/** Files larger than this are skipped. */
export const GREP_MAX_FILE_BYTES = 16 * MiB;
/** A returned line is cut to this many characters. */
export const GREP_LINE_CHARS = 2000;
/** Bytes of returned lines in one reply, at most. */
export const GREP_MAX_REPLY_BYTES = 4 * MiB;
/** Entries a search may walk. */
export const SEARCH_MAX_ENTRIES = 200_000;
export const GREP_MAX_PATTERN = 4096;

// Runs in a vm context so that its timeout interrupts a regular expression that
// backtracks for too long. Appends [line number, line] pairs to `out`.
const MATCH_SCRIPT = new vm.Script(`
  {
    let start = 0, n = 0;
    while (start < text.length && out.length < max * 2) {
      let end = text.indexOf("\\n", start);
      if (end < 0) end = text.length;
      n++;
      let line = text.slice(start, end);
      if (line.endsWith("\\r")) line = line.slice(0, -1);
      re.lastIndex = 0;
      if (re.test(line)) out.push(n, line.length > cut ? line.slice(0, cut) : line);
      start = end + 1;
    }
  }
`);

export function searchTimeout(ms: number): number {
  if (ms > SEARCH_MAX_TIMEOUT_MS) throw invalidArgument(`timeout_ms ${ms} is over the limit of ${SEARCH_MAX_TIMEOUT_MS}`);
  return ms || SEARCH_DEFAULT_TIMEOUT_MS;
}

/** What Grep and Glob requests share: the root (resolved and stat'ed), the result cap and the deadline. */
export async function searchScope(
  ctx: AgentContext,
  req: { path: string; maxResults: number; timeoutMs: number },
  defaultResults: number,
  maxResults: number,
): Promise<{ root: string; st: Stats; max: number; deadline: number }> {
  const root = resolveDir(ctx.dataDir, req.path, "path");
  if (req.maxResults > maxResults) throw invalidArgument(`max_results ${req.maxResults} is over the limit of ${maxResults}`);
  const max = req.maxResults || defaultResults;
  const deadline = Date.now() + searchTimeout(req.timeoutMs);
  try {
    return { root, st: await fs.stat(root), max, deadline };
  } catch (err) {
    throw errnoAt(err, root);
  }
}

function compilePattern(pattern: string, ignoreCase: boolean): RegExp {
  if (pattern === "") throw invalidArgument("pattern is empty");
  if (pattern.length > GREP_MAX_PATTERN) throw invalidArgument(`pattern is ${pattern.length} characters long, over the limit of ${GREP_MAX_PATTERN}`);
  try {
    return new RegExp(pattern, ignoreCase ? "i" : "");
  } catch (err) {
    throw invalidArgument(`pattern is not a valid regular expression: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export async function grep(ctx: AgentContext, req: pb.GrepRequest): Promise<pb.GrepResponse | Record<string, unknown>> {
  const re = compilePattern(req.pattern, req.ignoreCase);
  const filter = req.glob === "" ? undefined : compileGlob(req.glob, "glob");
  const { root, st, max: maxResults, deadline } = await searchScope(ctx, req, GREP_DEFAULT_RESULTS, GREP_MAX_RESULTS);
  if (!st.isDirectory() && !st.isFile()) throw invalidArgument(`path ${root} is neither a file nor a directory`);

  const matches: Array<{ path: string; lineNumber: number; line: string }> = [];
  let replyBytes = 0;
  let filesSearched = 0;
  let binarySkipped = 0;
  let largeSkipped = 0;
  let stopped = "";
  const out: unknown[] = [];
  const sandbox = vm.createContext({ re, text: "", out, max: 0, cut: GREP_LINE_CHARS });

  /** Searches one file; false = stop the search. */
  const searchFile = async (abs: string): Promise<boolean> => {
    let data: Buffer;
    try {
      const handle = await fs.open(abs, "r");
      try {
        const fst = await handle.stat();
        if (!fst.isFile()) return true;
        if (fst.size > GREP_MAX_FILE_BYTES) {
          largeSkipped++;
          return true;
        }
        data = await handle.readFile();
      } finally {
        await handle.close();
      }
    } catch {
      return true;
    }
    if (data.subarray(0, BINARY_SNIFF_BYTES).includes(0)) {
      binarySkipped++;
      return true;
    }
    filesSearched++;
    out.length = 0;
    sandbox.text = data.toString("utf8");
    sandbox.max = maxResults - matches.length;
    let timedOut = false;
    try {
      MATCH_SCRIPT.runInContext(sandbox, { timeout: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      if ((err as { code?: string }).code !== "ERR_SCRIPT_EXECUTION_TIMEOUT") throw err;
      timedOut = true;
    }
    sandbox.text = "";
    for (let i = 0; i + 1 < out.length; i += 2) {
      const line = out[i + 1] as string;
      replyBytes += Buffer.byteLength(line) + abs.length + 16;
      if (replyBytes > GREP_MAX_REPLY_BYTES) {
        stopped = "bytes";
        return false;
      }
      matches.push({ path: abs, lineNumber: out[i] as number, line });
    }
    if (timedOut) {
      stopped = "deadline";
      return false;
    }
    if (matches.length >= maxResults) {
      stopped = "max_results";
      return false;
    }
    return true;
  };

  if (st.isFile()) {
    await searchFile(root);
  } else {
    const walked = await walk(root, { deadline, maxEntries: SEARCH_MAX_ENTRIES }, async (e) => {
      if (e.kind !== "file") return true;
      if (filter && !filter.matches(filter.nameOnly ? path.posix.basename(e.rel) : e.rel)) return true;
      return searchFile(e.abs);
    });
    if (stopped === "" && walked !== "") stopped = walked === "entries" ? "files" : walked;
  }
  return { matches, filesSearched, stopped, binaryFilesSkipped: binarySkipped, largeFilesSkipped: largeSkipped };
}
