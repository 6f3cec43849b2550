// Where `old_text` is in a file's text, for the edit tool: an exact match first; when
// there is none, a match that ignores how much whitespace separates the words (a model
// often gets indentation or trailing spaces wrong while naming the right lines). Since
// that fallback stands for whole lines, it matches only whole lines: from a line's first
// non-blank character to the last one of the same or a later line, never inside a line
// ("  x = 1;" is not found in "max = 1;"). The replacement keeps the file's indentation
// in the whitespace-tolerant case.

export interface TextMatch {
  start: number;
  end: number;
  /** 1-based line of `start`. */
  line: number;
}

export type EditPlan =
  | { ok: true; text: string; replaced: number; mode: "exact" | "whitespace" }
  | { ok: false; problem: "not_found" | "ambiguous" | "unchanged" | "empty"; matches: TextMatch[]; mode?: "exact" | "whitespace" };

/** Start offsets of lines, for turning offsets into line numbers. */
function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) starts.push(i + 1);
  return starts;
}

function lineOf(starts: number[], offset: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo + 1;
}

/** Non-overlapping exact occurrences of `needle`. */
export function findExact(text: string, needle: string): TextMatch[] {
  if (needle === "") return [];
  const starts = lineStarts(text);
  const out: TextMatch[] = [];
  for (let i = text.indexOf(needle); i !== -1; i = text.indexOf(needle, i + needle.length)) {
    out.push({ start: i, end: i + needle.length, line: lineOf(starts, i) });
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Occurrences of `needle`'s words with any run of whitespace (newlines included) where
 * `needle` has whitespace, and none where it has none, that cover whole lines: only
 * indentation before the match on its first line, only spaces after it on its last.
 * Leading and trailing whitespace of `needle` is not part of the match.
 */
export function findWhitespaceTolerant(text: string, needle: string): TextMatch[] {
  const words = needle.trim().split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return [];
  // Spaces the file has at the end of the match's last line belong to it (a model drops them).
  const re = new RegExp(`(?<=(?:^|\\n)[ \\t]*)${words.map(escapeRegExp).join("\\s+")}[ \\t]*(?=\\r?\\n|$)`, "g");
  const starts = lineStarts(text);
  const out: TextMatch[] = [];
  for (const m of text.matchAll(re)) out.push({ start: m.index, end: m.index + m[0].length, line: lineOf(starts, m.index) });
  return out;
}

/** The whitespace before the first non-blank character of `s`, from its last line break on. */
function leadingIndent(s: string): string {
  const lead = /^\s*/.exec(s)![0];
  return lead.slice(lead.lastIndexOf("\n") + 1);
}

/**
 * The text that replaces a whitespace-tolerant match. The match starts at the first word,
 * after the file's own indentation, so the new text's leading whitespace is dropped; its
 * following lines are moved from the indentation `old_text` used to the file's.
 */
function tolerantReplacement(text: string, m: TextMatch, oldText: string, newText: string): { start: number; end: number; replacement: string } {
  const lineStart = text.lastIndexOf("\n", m.start - 1) + 1;
  const before = text.slice(lineStart, m.start);
  const fileIndent = /^[ \t]*$/.test(before) ? before : undefined;
  const oldIndent = leadingIndent(oldText);
  let body = newText.trim();
  if (fileIndent !== undefined && fileIndent !== oldIndent) {
    body = body
      .split("\n")
      .map((l, i) => (i === 0 || l.trim() === "" || !l.startsWith(oldIndent) ? l : fileIndent + l.slice(oldIndent.length)))
      .join("\n");
  }
  if (body === "" && fileIndent !== undefined) {
    // Removing whole lines: take their indentation and line break too, leaving no blank line.
    const nl = text.indexOf("\n", m.end);
    const lineEnd = nl === -1 ? text.length : nl;
    if (/^[ \t\r]*$/.test(text.slice(m.end, lineEnd))) return { start: lineStart, end: nl === -1 ? lineEnd : nl + 1, replacement: "" };
  }
  return { start: m.start, end: m.end, replacement: body };
}

/** Replaces `oldText` in `text` by `newText`: once (it must occur once) or everywhere with `replaceAll`. */
export function planEdit(text: string, oldText: string, newText: string, replaceAll: boolean): EditPlan {
  if (oldText === "") return { ok: false, problem: "empty", matches: [] };
  if (oldText === newText) return { ok: false, problem: "unchanged", matches: [] };
  let mode: "exact" | "whitespace" = "exact";
  let matches = findExact(text, oldText);
  if (matches.length === 0) {
    mode = "whitespace";
    matches = findWhitespaceTolerant(text, oldText);
  }
  if (matches.length === 0) return { ok: false, problem: "not_found", matches };
  if (matches.length > 1 && !replaceAll) return { ok: false, problem: "ambiguous", matches, mode };
  let out = "";
  let pos = 0;
  for (const m of matches) {
    const r = mode === "exact" ? { start: m.start, end: m.end, replacement: newText } : tolerantReplacement(text, m, oldText, newText);
    out += text.slice(pos, r.start) + r.replacement;
    pos = r.end;
  }
  out += text.slice(pos);
  if (out === text) return { ok: false, problem: "unchanged", matches, mode };
  return { ok: true, text: out, replaced: matches.length, mode };
}

/** "lines 3, 17 and 40" (at most `max` named). */
export function describeLines(matches: TextMatch[], max = 20): string {
  const lines = [...new Set(matches.map((m) => m.line))];
  const named = lines.slice(0, max);
  const more = lines.length - named.length;
  const list = named.length === 1 ? `${named[0]}` : `${named.slice(0, -1).join(", ")} and ${named[named.length - 1]}`;
  return `line${named.length === 1 ? "" : "s"} ${list}${more > 0 ? ` (and ${more} more)` : ""}`;
}
