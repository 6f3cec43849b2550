// Glob: the paths under a directory that match a pattern (glob-match.ts),
// walked by the agent itself; .git skipped, symlinks listed but not followed.
import type * as pb from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "../context.js";
import { invalidArgument } from "../errors.js";
import { compileGlob } from "./glob-match.js";
import { SEARCH_MAX_ENTRIES, searchScope } from "./grep.js";
import { walk } from "./walk.js";

export const GLOB_DEFAULT_RESULTS = 1000;
export const GLOB_MAX_RESULTS = 10_000;

export async function glob(ctx: AgentContext, req: pb.GlobRequest) {
  const matcher = compileGlob(req.pattern, "pattern");
  const { root, st, max, deadline } = await searchScope(ctx, req, GLOB_DEFAULT_RESULTS, GLOB_MAX_RESULTS);
  if (!st.isDirectory()) throw invalidArgument(`path ${root} is not a directory`);
  const paths: string[] = [];
  let stopped = "";
  const walked = await walk(root, { deadline, maxEntries: SEARCH_MAX_ENTRIES }, (e) => {
    if (!matcher.matches(e.rel)) return true;
    if (paths.length >= max) {
      stopped = "max_results";
      return false;
    }
    paths.push(e.kind === "dir" ? `${e.rel}/` : e.rel);
    return true;
  });
  if (stopped === "") stopped = walked;
  paths.sort();
  return { paths, stopped };
}
