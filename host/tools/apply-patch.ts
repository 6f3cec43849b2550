// apply_patch: a multi-file patch (patch.ts) applied all or nothing. Every file is
// read and every hunk placed before anything is written; then the changes are made one
// file at a time, each atomically, and when one fails the ones already made are undone.
import * as z from "zod";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { describeError } from "../workspace/errors.js";
import { applyHunks, parsePatch, PatchError, type PatchOp } from "./patch.js";
import { decodeTextFile, encodeTextFile, isNotFound, readWholeFile, statOrUndefined, writeWholeFile } from "./text-file.js";
import { defineTool, textResult, ToolError } from "./tool.js";

/** One file change, ready to make, with what undoes it. */
type Step =
  | { kind: "write"; path: string; bytes: Buffer; original?: { bytes: Buffer }; createdDir?: string; mode?: number }
  | { kind: "delete"; path: string; original: { bytes: Buffer; mode: number } };

/** The topmost missing directory on the way to `path`'s parent (what a write would create), or undefined. */
async function firstMissingParent(c: BridgeClient, path: string): Promise<string | undefined> {
  let missing: string | undefined;
  for (let dir = parentOf(path); dir !== undefined; dir = parentOf(dir)) {
    const info = await statOrUndefined(c, dir);
    if (info !== undefined) {
      if (info.type !== FileType.DIRECTORY && info.type !== FileType.SYMLINK) throw new ToolError(`${dir} is a file, so ${path} cannot be created`);
      return missing;
    }
    missing = dir;
  }
  return missing;
}

function parentOf(p: string): string | undefined {
  const trimmed = p.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  if (i <= 0) return i === 0 ? (trimmed === "/" ? undefined : "/") : undefined;
  return trimmed.slice(0, i);
}

async function plan(c: BridgeClient, ops: PatchOp[], signal: AbortSignal): Promise<Step[]> {
  const steps: Step[] = [];
  for (const [n, op] of ops.entries()) {
    const where = `file ${n + 1} of the patch (${op.path}, patch line ${op.patchLine})`;
    try {
      if (op.kind === "add") {
        if ((await statOrUndefined(c, op.path)) !== undefined) throw new ToolError(`${op.path} already exists; change it with "*** Update File", or delete it first`);
        steps.push({ kind: "write", path: op.path, bytes: Buffer.from(op.content, "utf8"), createdDir: await firstMissingParent(c, op.path) });
      } else if (op.kind === "delete") {
        const info = await statOrUndefined(c, op.path);
        if (info === undefined) throw new ToolError(`${op.path} does not exist`);
        if (info.type === FileType.DIRECTORY) throw new ToolError(`${op.path} is a directory; the patch deletes files only`);
        steps.push({ kind: "delete", path: op.path, original: { bytes: await readWholeFile(c, op.path, { signal, tool: "apply_patch" }), mode: info.mode } });
      } else {
        const bytes = await readWholeFile(c, op.path, { signal, tool: "apply_patch" });
        const file = decodeTextFile(bytes, op.path);
        const text = op.hunks.length === 0 ? file.text : applyHunks(op.path, file.text, op.hunks);
        const next = encodeTextFile(file, text);
        if (op.moveTo === undefined) {
          if (next.equals(bytes)) throw new ToolError(`the hunks would not change ${op.path}`);
          steps.push({ kind: "write", path: op.path, bytes: next, original: { bytes } });
        } else {
          if ((await statOrUndefined(c, op.moveTo)) !== undefined) throw new ToolError(`cannot move ${op.path} to ${op.moveTo}: it already exists`);
          const info = await statOrUndefined(c, op.path);
          const mode = info?.mode ?? 0;
          // A new file would get the agent's default mode (0644): a moved script keeps its +x.
          steps.push({ kind: "write", path: op.moveTo, bytes: next, createdDir: await firstMissingParent(c, op.moveTo), mode });
          steps.push({ kind: "delete", path: op.path, original: { bytes, mode } });
        }
      }
    } catch (err) {
      if (err instanceof ToolError || err instanceof PatchError) throw new ToolError(`${where}: ${err.message}. Nothing was changed.`);
      throw err;
    }
  }
  return steps;
}

async function undo(c: BridgeClient, step: Step): Promise<void> {
  if (step.kind === "delete") {
    await writeWholeFile(c, step.path, step.original.bytes, { mode: step.original.mode });
  } else if (step.original !== undefined) {
    await writeWholeFile(c, step.path, step.original.bytes);
  } else {
    // Two added files may share a created directory: the second undo finds it gone.
    await c.deleteFile(step.createdDir ?? step.path, step.createdDir !== undefined).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }
}

export const applyPatchTool = defineTool({
  name: "apply_patch",
  title: "Apply a patch",
  description: [
    "Applies a patch that adds, deletes, updates or moves files; either every change is made or none. Format:",
    "*** Begin Patch",
    "*** Add File: path/new.txt",
    "+first line of the new file",
    "*** Delete File: path/old.txt",
    "*** Update File: path/file.py",
    "*** Move to: path/renamed.py   (optional)",
    "@@ def some_function():        (optional: a line above the change, to place it)",
    " unchanged context line",
    "-line to remove",
    "+line to add",
    "*** End Patch",
    "Give about 3 lines of context around each change. Paths are absolute or relative to /data. Files keep their line endings.",
  ].join("\n"),
  inputSchema: z.strictObject({ patch: z.string().min(1).describe("The patch text, from *** Begin Patch to *** End Patch") }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
  async run(args, ctx) {
    let ops: PatchOp[];
    try {
      ops = parsePatch(args.patch);
    } catch (err) {
      if (err instanceof PatchError) throw new ToolError(`${err.message}. Nothing was changed.`);
      throw err;
    }
    return ctx.call(async (c) => {
      const steps = await plan(c, ops, ctx.signal);
      const done: Step[] = [];
      for (const step of steps) {
        try {
          if (step.kind === "write") await writeWholeFile(c, step.path, step.bytes, { signal: ctx.signal, mode: step.mode });
          else await c.deleteFile(step.path);
          done.push(step);
        } catch (err) {
          const failures: string[] = [];
          for (const d of done.reverse()) await undo(c, d).catch((e: unknown) => failures.push(`${d.path}: ${describeError(e)}`));
          const what = `${step.kind === "write" ? "writing" : "deleting"} ${step.path} failed (${describeError(err)})`;
          if (failures.length > 0) throw new ToolError(`${what}; undoing the changes already made failed for ${failures.join("; ")}`);
          throw new ToolError(`${what}; the changes already made were undone, so nothing was changed`);
        }
      }
      const summary = ops.map((op) => {
        if (op.kind === "add") return `A ${op.path}`;
        if (op.kind === "delete") return `D ${op.path}`;
        return op.moveTo !== undefined ? `R ${op.path} -> ${op.moveTo}` : `M ${op.path}`;
      });
      return textResult(`Applied the patch:\n${summary.join("\n")}`);
    });
  },
});
