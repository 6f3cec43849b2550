// The `*** Begin Patch` format of the apply_patch tool: a patch names files to add,
// delete or update (and optionally move); an update is a list of hunks of context
// (" "), removed ("-") and added ("+") lines, each optionally anchored by an
// "@@ <line>" header that names a line before it.
//
//   *** Begin Patch
//   *** Add File: <path>          then "+" lines: the new file
//   *** Delete File: <path>
//   *** Update File: <path>
//   *** Move to: <path>           optional, right after Update File
//   @@ [<anchor line>]            starts a hunk (optional before the first hunk)
//   [ +-]<line>                   context, removed, added
//   *** End of File               optional: the hunk ends at the end of the file
//   *** End Patch
//
// Parsing is pure; applying hunks works on a file's text split at "\n". A hunk's context
// lines are matched leniently (whitespace, a stray "\r") but never rewritten: the file's
// own line stays, and only the "+" lines come from the patch.
import { posix } from "node:path";

export interface Hunk {
  /** The text after "@@ ", when given: a line that must occur before the hunk's lines. */
  anchor?: string;
  /** The hunk's lines as they are now (context and removed), in order. */
  oldLines: string[];
  /** The hunk's lines as they will be (context and added), in order. */
  newLines: string[];
  /** The tag of each of the hunk's lines in patch order: " " context, "-" removed, "+" added. */
  kinds: string;
  /** "*** End of File" followed: the old lines end the file. */
  endOfFile: boolean;
  /** Line of the patch where the hunk starts (1-based), for messages. */
  patchLine: number;
}

export type PatchOp =
  | { kind: "add"; path: string; content: string; patchLine: number }
  | { kind: "delete"; path: string; patchLine: number }
  | { kind: "update"; path: string; moveTo?: string; hunks: Hunk[]; patchLine: number };

export class PatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PatchError";
  }
}

const BEGIN = "*** Begin Patch";
const END = "*** End Patch";
const ADD = "*** Add File: ";
const DELETE = "*** Delete File: ";
const UPDATE = "*** Update File: ";
const MOVE = "*** Move to: ";
const EOF_MARK = "*** End of File";
/** Where relative paths resolve in the workspace. */
const DATA_DIR = "/data";

function fileHeader(line: string): boolean {
  return line.startsWith(ADD) || line.startsWith(DELETE) || line.startsWith(UPDATE) || line.trim() === END;
}

function pathOf(line: string, prefix: string, lineNo: number): string {
  const p = line.slice(prefix.length).trim();
  if (p === "") throw new PatchError(`patch line ${lineNo}: "${prefix.trim()}" needs a path`);
  if (p.includes("\0")) throw new PatchError(`patch line ${lineNo}: the path contains a NUL character`);
  return p;
}

/** The operations of a patch, or a PatchError naming the patch line that is wrong. */
export function parsePatch(patch: string): PatchOp[] {
  const lines = patch.replaceAll("\r\n", "\n").split("\n");
  // Blank lines around the markers are tolerated.
  let first = 0;
  while (first < lines.length && lines[first]!.trim() === "") first++;
  let last = lines.length - 1;
  while (last >= 0 && lines[last]!.trim() === "") last--;
  if (first > last || lines[first]!.trim() !== BEGIN) throw new PatchError(`a patch must start with "${BEGIN}"`);
  if (lines[last]!.trim() !== END) throw new PatchError(`a patch must end with "${END}"`);

  const ops: PatchOp[] = [];
  let i = first + 1;
  while (i < last) {
    const line = lines[i]!;
    const lineNo = i + 1;
    if (line.startsWith(ADD)) {
      const path = pathOf(line, ADD, lineNo);
      const body: string[] = [];
      i++;
      while (i < last && !fileHeader(lines[i]!)) {
        const l = lines[i]!;
        if (!l.startsWith("+")) throw new PatchError(`patch line ${i + 1}: every line of an added file starts with "+", got ${JSON.stringify(l.slice(0, 80))}`);
        body.push(l.slice(1));
        i++;
      }
      ops.push({ kind: "add", path, content: body.length === 0 ? "" : `${body.join("\n")}\n`, patchLine: lineNo });
    } else if (line.startsWith(DELETE)) {
      ops.push({ kind: "delete", path: pathOf(line, DELETE, lineNo), patchLine: lineNo });
      i++;
    } else if (line.startsWith(UPDATE)) {
      const path = pathOf(line, UPDATE, lineNo);
      i++;
      let moveTo: string | undefined;
      if (i < last && lines[i]!.startsWith(MOVE)) {
        moveTo = pathOf(lines[i]!, MOVE, i + 1);
        i++;
      }
      const hunks: Hunk[] = [];
      while (i < last && !fileHeader(lines[i]!)) {
        const r = parseHunk(lines, i, last, hunks.length === 0);
        hunks.push(r.hunk);
        i = r.next;
      }
      if (hunks.length === 0 && moveTo === undefined) throw new PatchError(`patch line ${lineNo}: "Update File: ${path}" has no hunks`);
      ops.push({ kind: "update", path, ...(moveTo !== undefined ? { moveTo } : {}), hunks, patchLine: lineNo });
    } else if (line.trim() === "") {
      i++;
    } else {
      throw new PatchError(`patch line ${lineNo}: expected "${ADD.trim()}", "${DELETE.trim()}" or "${UPDATE.trim()}", got ${JSON.stringify(line.slice(0, 80))}`);
    }
  }
  if (ops.length === 0) throw new PatchError("the patch changes no file");
  // Every change is planned from the files as they were, so a file named twice (even
  // spelled two ways: "a.txt", "/data/a.txt", "./x/../a.txt") would have its first
  // change silently overwritten by the second.
  const seen = new Map<string, { line: number; path: string }>();
  for (const op of ops) {
    for (const p of op.kind === "update" && op.moveTo !== undefined ? [op.path, op.moveTo] : [op.path]) {
      const key = patchPathKey(p);
      const before = seen.get(key);
      if (before !== undefined) {
        const same = before.path === p ? "" : ` (as ${before.path}: both are ${key})`;
        throw new PatchError(`patch line ${op.patchLine}: ${p} is already changed at patch line ${before.line}${same}; give each file once`);
      }
      seen.set(key, { line: op.patchLine, path: p });
    }
  }
  return ops;
}

/** The file a patch path names, as the workspace resolves it: relative to /data, normalized. */
export function patchPathKey(p: string): string {
  return posix.resolve(DATA_DIR, p);
}

function parseHunk(lines: string[], start: number, last: number, firstHunk: boolean): { hunk: Hunk; next: number } {
  let i = start;
  let anchor: string | undefined;
  const header = lines[i]!;
  if (header.startsWith("@@")) {
    const rest = header.slice(2).trim();
    if (rest !== "") anchor = rest;
    i++;
  } else if (!firstHunk) {
    throw new PatchError(`patch line ${i + 1}: a hunk starts with "@@", got ${JSON.stringify(header.slice(0, 80))}`);
  }
  const hunk: Hunk = { oldLines: [], newLines: [], kinds: "", endOfFile: false, patchLine: start + 1, ...(anchor !== undefined ? { anchor } : {}) };
  let body = 0;
  while (i < last) {
    const l = lines[i]!;
    if (l.startsWith("@@") || fileHeader(l)) break;
    if (l.trim() === EOF_MARK) {
      hunk.endOfFile = true;
      i++;
      break;
    }
    const tag = l[0];
    if (l === "") {
      // An empty line stands for an empty context line (editors strip the lone space).
      hunk.oldLines.push("");
      hunk.newLines.push("");
      hunk.kinds += " ";
    } else if (tag === " ") {
      hunk.oldLines.push(l.slice(1));
      hunk.newLines.push(l.slice(1));
      hunk.kinds += " ";
    } else if (tag === "-") {
      hunk.oldLines.push(l.slice(1));
      hunk.kinds += "-";
    } else if (tag === "+") {
      hunk.newLines.push(l.slice(1));
      hunk.kinds += "+";
    } else {
      throw new PatchError(`patch line ${i + 1}: a hunk line starts with " ", "-" or "+", got ${JSON.stringify(l.slice(0, 80))}`);
    }
    body++;
    i++;
  }
  if (body === 0) throw new PatchError(`patch line ${start + 1}: the hunk has no lines`);
  return { hunk, next: i };
}

type LineEquals = (a: string, b: string) => boolean;
const COMPARISONS: LineEquals[] = [(a, b) => a === b, (a, b) => a.trimEnd() === b.trimEnd(), (a, b) => a.trim() === b.trim()];

/** First index ≥ start where `pattern` occurs in `lines`: exactly, else ignoring trailing, else surrounding whitespace. */
export function seekLines(lines: string[], pattern: string[], start: number, endOfFile: boolean): number {
  if (pattern.length === 0) return start;
  if (pattern.length > lines.length) return -1;
  for (const eq of COMPARISONS) {
    const matchesAt = (at: number) => pattern.every((p, k) => eq(lines[at + k]!, p));
    if (endOfFile) {
      const at = lines.length - pattern.length;
      if (at >= start && matchesAt(at)) return at;
      continue;
    }
    for (let at = start; at + pattern.length <= lines.length; at++) if (matchesAt(at)) return at;
  }
  return -1;
}

interface BodyLine {
  kind: " " | "-" | "+";
  text: string;
}

/** A hunk's lines in patch order, each with its tag. */
function bodyOf(h: Hunk): BodyLine[] {
  const body: BodyLine[] = [];
  let o = 0;
  let n = 0;
  for (const kind of h.kinds) {
    if (kind === " ") {
      body.push({ kind, text: h.oldLines[o++]! });
      n++;
    } else if (kind === "-") body.push({ kind, text: h.oldLines[o++]! });
    else body.push({ kind: "+", text: h.newLines[n++]! });
  }
  return body;
}

/**
 * The lines that replace a hunk's match at `at`. Context lines are the file's own: they
 * were matched ignoring whitespace, and the patch's copy of them may be indented
 * differently or lack the "\r" a mixed-ending file has there. An added line takes the
 * ending of the file's line it follows (or, at the start, precedes).
 */
function replacementAt(lines: string[], at: number, body: BodyLine[]): string[] {
  const out: string[] = [];
  let o = 0;
  for (const b of body) {
    if (b.kind === " ") out.push(lines[at + o++]!);
    else if (b.kind === "-") o++;
    else {
      const ref = o > 0 ? lines[at + o - 1] : (lines[at] ?? lines[at - 1]);
      out.push(ref?.endsWith("\r") && !b.text.endsWith("\r") ? `${b.text}\r` : b.text);
    }
  }
  return out;
}

/** The text of a file after its hunks, or a PatchError saying which hunk does not fit. */
export function applyHunks(path: string, text: string, hunks: Hunk[]): string {
  const endsWithNewline = text === "" || text.endsWith("\n");
  const lines = text === "" ? [] : (endsWithNewline ? text.slice(0, -1) : text).split("\n");
  const edits: Array<{ at: number; remove: number; insert: string[] }> = [];
  let cursor = 0;
  hunks.forEach((h, n) => {
    const which = `hunk ${n + 1} of ${path} (patch line ${h.patchLine})`;
    if (h.anchor !== undefined) {
      const at = seekLines(lines, [h.anchor], cursor, false);
      if (at === -1) throw new PatchError(`${which}: its "@@ ${h.anchor}" line is not in the file${cursor > 0 ? ` after line ${cursor}` : ""}`);
      cursor = at + 1;
    }
    let body = bodyOf(h);
    let old = h.oldLines;
    if (old.length === 0) {
      // Only additions: after the anchor when there is one, else at the end.
      const at = h.anchor !== undefined ? cursor : lines.length;
      edits.push({ at, remove: 0, insert: replacementAt(lines, at, body) });
      return;
    }
    let at = seekLines(lines, old, cursor, h.endOfFile);
    if (at === -1 && old[old.length - 1] === "") {
      // A trailing empty context line stands for the file's final newline.
      const last = body.findLastIndex((b) => b.kind !== "+");
      body = body.filter((_, k) => k !== last);
      old = old.slice(0, -1);
      at = seekLines(lines, old, cursor, h.endOfFile);
    }
    if (at === -1) {
      const shown = old.slice(0, 6).map((l) => `  ${l}`).join("\n");
      throw new PatchError(`${which}: these lines are not in the file${cursor > 0 ? ` after line ${cursor}` : ""}${h.endOfFile ? " at its end" : ""}:\n${shown}${old.length > 6 ? `\n  … (${old.length - 6} more)` : ""}\nRead the file again and make the context and "-" lines match it.`);
    }
    edits.push({ at, remove: old.length, insert: replacementAt(lines, at, body) });
    cursor = at + old.length;
  });
  // From the bottom up, so earlier positions stay valid; same position: later hunk first.
  const ordered = edits.map((e, idx) => ({ ...e, idx })).sort((a, b) => b.at - a.at || b.idx - a.idx);
  for (const e of ordered) lines.splice(e.at, e.remove, ...e.insert);
  if (lines.length === 0) return "";
  return lines.join("\n") + (endsWithNewline ? "\n" : "");
}
