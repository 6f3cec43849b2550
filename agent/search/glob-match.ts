// Glob patterns compiled to regular expressions, for the agent's Glob and Grep.
//   *      any characters of one path component (a leading dot included)
//   ?      one character of a component
//   **     as a whole component: any number of components (zero included)
//   [abc] [a-z] [!abc] [^abc]   one character of (or not of) a set
//   {a,b}  either alternative (alternatives may nest)
//   \x     the character x itself
// A pattern never matches across "/" except through "**".
import { invalidArgument } from "../errors.js";

/** Longest pattern accepted. */
export const GLOB_MAX_LENGTH = 1024;
/** Most "**" components in a pattern: each one multiplies the work of a match by the path's depth. */
export const GLOB_MAX_GLOBSTARS = 4;

const REGEX_SPECIAL = /[\\^$.*+?()[\]{}|/]/;

function escapeChar(c: string): string {
  return REGEX_SPECIAL.test(c) ? `\\${c}` : c;
}

class Compiler {
  private i = 0;
  globstars = 0;

  constructor(private readonly src: string) {}

  /** Compiles until the end, or (inside braces) until an unnested "," or "}". */
  compile(inBraces: boolean): string {
    let out = "";
    const s = this.src;
    while (this.i < s.length) {
      const c = s[this.i]!;
      if (inBraces && (c === "," || c === "}")) return out;
      if (c === "\\") {
        const next = s[this.i + 1];
        if (next === undefined) throw invalidArgument(`glob ${JSON.stringify(s)} ends with a lone backslash`);
        out += escapeChar(next);
        this.i += 2;
      } else if (c === "*") {
        let j = this.i;
        while (s[j] === "*") j++;
        const wholeComponent = j - this.i >= 2 && (this.i === 0 || s[this.i - 1] === "/") && (j === s.length || s[j] === "/");
        if (wholeComponent) {
          this.globstars++;
          if (j === s.length) {
            out += ".*";
            this.i = j;
          } else {
            // "**/": zero or more whole components; several in a row are one.
            out += "(?:[^/]*/)*";
            this.i = j + 1;
            while (s.startsWith("**/", this.i)) this.i += 3;
          }
        } else {
          out += "[^/]*";
          this.i = j;
        }
      } else if (c === "?") {
        out += "[^/]";
        this.i++;
      } else if (c === "[") {
        out += this.charClass();
      } else if (c === "{") {
        out += this.braces();
      } else {
        out += escapeChar(c);
        this.i++;
      }
    }
    if (inBraces) throw invalidArgument(`glob ${JSON.stringify(s)} has a "{" without its "}"`);
    return out;
  }

  private charClass(): string {
    const s = this.src;
    let j = this.i + 1;
    let negate = false;
    if (s[j] === "!" || s[j] === "^") {
      negate = true;
      j++;
    }
    let body = "";
    let first = true;
    for (; j < s.length; j++) {
      const c = s[j]!;
      if (c === "]" && !first) break;
      first = false;
      if (c === "\\") {
        const next = s[j + 1];
        if (next === undefined) break;
        body += `\\${next}`;
        j++;
      } else if (c === "-") {
        body += "-";
      } else {
        body += /[\\\]^[]/.test(c) ? `\\${c}` : c;
      }
    }
    if (j >= s.length) throw invalidArgument(`glob ${JSON.stringify(s)} has a "[" without its "]"`);
    this.i = j + 1;
    try {
      new RegExp(`[${body}]`);
    } catch {
      throw invalidArgument(`glob ${JSON.stringify(s)} has an invalid character set`);
    }
    return negate ? `[^/${body}]` : `(?!/)[${body}]`;
  }

  private braces(): string {
    this.i++;
    const alternatives: string[] = [];
    for (;;) {
      alternatives.push(this.compile(true));
      const c = this.src[this.i];
      this.i++;
      if (c === "}") break;
    }
    return `(?:${alternatives.join("|")})`;
  }
}

export interface GlobMatcher {
  /** Matches a path relative to the search root ("a/b.txt", no leading "/"). */
  matches(relPath: string): boolean;
  /** True when the pattern has no "/": it then matches a file's name at any depth (Grep's filter). */
  readonly nameOnly: boolean;
  readonly source: string;
}

export function compileGlob(pattern: string, field = "glob"): GlobMatcher {
  if (pattern === "") throw invalidArgument(`${field} is empty`);
  if (pattern.length > GLOB_MAX_LENGTH) throw invalidArgument(`${field} is ${pattern.length} characters long, over the limit of ${GLOB_MAX_LENGTH}`);
  if (pattern.includes("\0")) throw invalidArgument(`${field} contains a NUL byte`);
  if (pattern.startsWith("/")) throw invalidArgument(`${field} ${JSON.stringify(pattern)} is absolute: it matches paths relative to the searched directory; put the directory in path`);
  const compiler = new Compiler(pattern.replace(/^\.\//, ""));
  const body = compiler.compile(false);
  if (compiler.globstars > GLOB_MAX_GLOBSTARS) throw invalidArgument(`${field} has ${compiler.globstars} "**" components, over the limit of ${GLOB_MAX_GLOBSTARS}`);
  const re = new RegExp(`^${body}$`, "s");
  return { matches: (p) => re.test(p), nameOnly: !pattern.includes("/"), source: pattern };
}
