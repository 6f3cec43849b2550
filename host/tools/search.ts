// grep and glob: run by the agent itself (its Grep and Glob RPCs), so they work in
// images without a shell or grep; .git and binary files are skipped; the agent bounds
// time, results and bytes, and the result says when it stopped early and why.
import * as z from "zod";
import { defineTool, refusedInput, textResult } from "./tool.js";

export const GREP_DEFAULT_RESULTS = 200;
export const GREP_MAX_RESULTS = 1000;

const STOPPED: Record<string, string> = {
  max_results: "stopped at max_results: narrow the pattern, path or glob to see the rest",
  bytes: "stopped: the matching lines reached the size limit; narrow the pattern, path or glob",
  deadline: "stopped at the time limit (10 s): search a narrower path or glob",
  files: "stopped: the directory holds too many entries to walk; search a narrower path",
  entries: "stopped: the directory holds too many entries to walk; search a narrower path",
};

export const grepTool = defineTool({
  name: "grep",
  title: "Search file contents",
  description:
    "Searches the files under path (a directory, or one file) for lines matching a regular expression (JavaScript syntax) and returns them as path:line: text. " +
    "Skips .git directories, binary files and files over 16 MB. glob limits the files searched (e.g. *.ts matches by name at any depth; src/**/*.ts by path). " +
    `At most max_results lines (default ${GREP_DEFAULT_RESULTS}, at most ${GREP_MAX_RESULTS}); long lines are cut at 2,000 characters.`,
  inputSchema: z.strictObject({
    pattern: z.string().min(1).max(4096).describe("A regular expression (JavaScript syntax), e.g. \"function\\s+main\""),
    path: z.string().min(1).max(4096).default("/data").describe("A directory or file to search (default /data; relative paths are relative to /data)"),
    glob: z.string().min(1).max(1024).optional().describe("Only files matching this glob, e.g. \"*.py\" or \"src/**/*.ts\""),
    ignore_case: z.boolean().default(false).describe("Match letters of either case"),
    max_results: z.number().int().min(1).max(GREP_MAX_RESULTS).default(GREP_DEFAULT_RESULTS).describe(`Most matching lines returned (default ${GREP_DEFAULT_RESULTS})`),
  }),
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    const r = await ctx
      .call((c) => c.grep({ pattern: args.pattern, path: args.path, glob: args.glob ?? "", ignoreCase: args.ignore_case, maxResults: args.max_results }, { signal: ctx.signal }))
      .catch(refusedInput);
    const files = new Set(r.matches.map((m) => m.path)).size;
    const lines = r.matches.map((m) => `${m.path}:${m.lineNumber}: ${m.line}`);
    const notes = [`${r.matches.length} matching line${r.matches.length === 1 ? "" : "s"} in ${files} file${files === 1 ? "" : "s"}; ${r.filesSearched} file${r.filesSearched === 1 ? "" : "s"} searched`];
    if (r.binaryFilesSkipped > 0) notes.push(`${r.binaryFilesSkipped} binary skipped`);
    if (r.largeFilesSkipped > 0) notes.push(`${r.largeFilesSkipped} over 16 MB skipped`);
    if (r.stopped !== "") notes.push(STOPPED[r.stopped] ?? `stopped early (${r.stopped})`);
    return textResult(`${lines.length > 0 ? `${lines.join("\n")}\n` : "No matches.\n"}[${notes.join("; ")}]`);
  },
});

export const GLOB_MAX_RESULTS = 1000;

export const globTool = defineTool({
  name: "glob",
  title: "Find files by name",
  description:
    "Lists the paths under a directory that match a glob pattern, relative to that directory, sorted; directories end with /. " +
    "* and ? match within one path component, ** any number of components, [abc] one character of a set, {a,b} either alternative. " +
    `Skips .git. At most ${GLOB_MAX_RESULTS} paths.`,
  inputSchema: z.strictObject({
    pattern: z.string().min(1).max(1024).describe("A glob relative to path, e.g. \"**/*.ts\" or \"src/*.{c,h}\""),
    path: z.string().min(1).max(4096).default("/data").describe("The directory to search (default /data)"),
  }),
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    const r = await ctx.call((c) => c.glob({ pattern: args.pattern, path: args.path, maxResults: GLOB_MAX_RESULTS }, { signal: ctx.signal })).catch(refusedInput);
    const notes = [`${r.paths.length} path${r.paths.length === 1 ? "" : "s"} matching ${args.pattern} under ${args.path}`];
    if (r.stopped !== "") notes.push(STOPPED[r.stopped] ?? `stopped early (${r.stopped})`);
    return textResult(`${r.paths.length > 0 ? `${r.paths.join("\n")}\n` : "No paths match.\n"}[${notes.join("; ")}]`);
  },
});
