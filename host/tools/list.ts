// list: a directory's entries, one a line, paged. Recursive listings show paths
// relative to the listed directory; a directory with more than COLLAPSE_ABOVE entries
// (node_modules, caches, build output) is shown as one summary line instead of its
// contents, so one listing gives the shape of a project.
import * as z from "zod";
import { Status, rpcCode } from "../../proto/rpc.js";
import { FileType, type FileInfo } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { WorkspaceError } from "../workspace/errors.js";
import { isNotFound, statOrUndefined } from "./text-file.js";
import { defineTool, textResult, ToolError, UINT32_MAX } from "./tool.js";

export const LIST_MAX_LIMIT = 200;
/** In a recursive listing, a directory with more entries than this is summarized. */
export const COLLAPSE_ABOVE = 50;
/** Entries one agent page holds at most. */
const AGENT_PAGE = 10_000;

function describe(e: FileInfo, name: string): string {
  if (e.pathTooLong) return `${name} (path too long to be named)`;
  switch (e.type) {
    case FileType.DIRECTORY:
      return `${name}/`;
    case FileType.SYMLINK:
      return `${name} -> ${e.symlinkTarget}`;
    case FileType.FILE:
      return `${name} (${e.size} bytes)`;
    default:
      return `${name} (special file)`;
  }
}

function tooManyEntries(err: unknown): boolean {
  return err instanceof WorkspaceError ? err.code === "resource_exhausted" : rpcCode(err) === Status.RESOURCE_EXHAUSTED;
}

async function listAll(c: BridgeClient, path: string, signal: AbortSignal): Promise<FileInfo[]> {
  const all: FileInfo[] = [];
  let offset = 0;
  for (;;) {
    const page = await c.listDir({ path, recursive: true, offset, limit: AGENT_PAGE }, { signal });
    all.push(...page.entries);
    if (!page.hasMore) return all;
    offset = page.nextOffset;
  }
}

/** The lines of a recursive listing, with large directories collapsed to one line each. */
export function collapseLarge(entries: FileInfo[]): string[] {
  const children = new Map<string, number>();
  const parentOf = (p: string) => (p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "");
  for (const e of entries) children.set(parentOf(e.path), (children.get(parentOf(e.path)) ?? 0) + 1);
  // Sorted by path, a directory's entries need not follow it ("a", "a.txt", "a/b"): check ancestors.
  const isLarge = (dir: string) => (children.get(dir) ?? 0) > COLLAPSE_ABOVE;
  const underLarge = (p: string) => {
    for (let dir = parentOf(p); dir !== ""; dir = parentOf(dir)) if (isLarge(dir)) return true;
    return false;
  };
  const lines: string[] = [];
  for (const e of entries) {
    if (underLarge(e.path)) continue;
    if (e.type === FileType.DIRECTORY && isLarge(e.path)) lines.push(`${e.path}/ (${children.get(e.path)} entries, not expanded: list this directory to see them)`);
    else lines.push(describe(e, e.path));
  }
  return lines;
}

export const listTool = defineTool({
  name: "list",
  title: "List a directory",
  description:
    `Lists a directory of the workspace: one entry a line ("name/" for directories, "name -> target" for symlinks, files with their size). ` +
    `At most ${LIST_MAX_LIMIT} entries a call; page with offset. With recursive, every entry below the directory is listed by its relative path, ` +
    `but a directory holding more than ${COLLAPSE_ABOVE} entries is shown as one summary line (list it by itself to see inside). Relative paths are relative to /data.`,
  inputSchema: z.strictObject({
    path: z.string().min(1).max(4096).default(".").describe("The directory: absolute, or relative to /data (default: /data itself)"),
    recursive: z.boolean().default(false).describe("List everything below the directory, not only its own entries"),
    offset: z.number().int().min(0).max(UINT32_MAX).default(0).describe("The first entry to return, 0-based, for paging (default 0)"),
    limit: z.number().int().min(1).max(LIST_MAX_LIMIT).default(LIST_MAX_LIMIT).describe(`How many entries to return (default and most: ${LIST_MAX_LIMIT})`),
  }),
  annotations: { readOnlyHint: true, openWorldHint: false },
  async run(args, ctx) {
    return ctx.call(async (c) => {
      const info = await statOrUndefined(c, args.path);
      if (info === undefined) throw new ToolError(`${args.path} does not exist`);
      if (info.type === FileType.FILE) throw new ToolError(`${args.path} is a file, not a directory; use read to see its content`);
      if (!args.recursive) {
        let page;
        try {
          page = await c.listDir({ path: args.path, offset: args.offset, limit: args.limit }, { signal: ctx.signal });
        } catch (err) {
          if (isNotFound(err)) throw new ToolError(`${args.path} does not exist`);
          throw err;
        }
        if (page.total === 0) return textResult(`${args.path} is empty.`);
        if (page.entries.length === 0) throw new ToolError(`offset ${args.offset} is past the end: ${args.path} has ${page.total} entries`);
        const lines = page.entries.map((e) => describe(e, e.name));
        const last = args.offset + page.entries.length;
        const more = page.hasMore ? `; continue with offset=${page.nextOffset}` : "";
        return textResult(`${lines.join("\n")}\n[entries ${args.offset + 1}-${last} of ${page.total} in ${args.path}${more}]`);
      }
      let entries;
      try {
        entries = await listAll(c, args.path, ctx.signal);
      } catch (err) {
        if (tooManyEntries(err)) throw new ToolError(`there are too many entries below ${args.path} for a recursive listing; list it without recursive, or list its subdirectories`);
        throw err;
      }
      if (entries.length === 0) return textResult(`${args.path} is empty.`);
      const lines = collapseLarge(entries);
      const page = lines.slice(args.offset, args.offset + args.limit);
      if (page.length === 0) throw new ToolError(`offset ${args.offset} is past the end: the listing of ${args.path} has ${lines.length} lines`);
      const last = args.offset + page.length;
      const more = last < lines.length ? `; continue with offset=${last}` : "";
      return textResult(`${page.join("\n")}\n[lines ${args.offset + 1}-${last} of ${lines.length} below ${args.path} (${entries.length} entries in all)${more}]`);
    });
  },
});
