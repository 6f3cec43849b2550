// The apply_patch grammar: parsing (Add, Delete, Update with hunks, Move to, End of
// File) with errors that name the patch line, and placing hunks in a file's text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyHunks, parsePatch, PatchError, seekLines } from "../../host/tools/patch.js";
import { decodeTextFile, encodeTextFile } from "../../host/tools/text-file.js";

test("a patch with every kind of operation parses into its operations", () => {
  const ops = parsePatch(
    [
      "*** Begin Patch",
      "*** Add File: docs/new.md",
      "+# Title",
      "+",
      "+text",
      "*** Delete File: old.txt",
      "*** Update File: src/app.py",
      "*** Move to: src/main.py",
      "@@ def main():",
      " a = 1",
      "-b = 2",
      "+b = 3",
      "@@",
      " last",
      "+appended",
      "*** End of File",
      "*** End Patch",
    ].join("\n"),
  );
  assert.deepEqual(ops, [
    { kind: "add", path: "docs/new.md", content: "# Title\n\ntext\n", patchLine: 2 },
    { kind: "delete", path: "old.txt", patchLine: 6 },
    {
      kind: "update",
      path: "src/app.py",
      moveTo: "src/main.py",
      patchLine: 7,
      hunks: [
        { anchor: "def main():", oldLines: ["a = 1", "b = 2"], newLines: ["a = 1", "b = 3"], kinds: " -+", endOfFile: false, patchLine: 9 },
        { oldLines: ["last"], newLines: ["last", "appended"], kinds: " +", endOfFile: true, patchLine: 13 },
      ],
    },
  ]);
});

test("the first hunk may omit its @@ line; CRLF patches and blank lines around the markers are accepted", () => {
  const ops = parsePatch("\r\n*** Begin Patch\r\n*** Update File: a.txt\r\n x\r\n-y\r\n+z\r\n*** End Patch\r\n\r\n");
  assert.equal(ops.length, 1);
  assert.deepEqual(ops[0], { kind: "update", path: "a.txt", patchLine: 3, hunks: [{ oldLines: ["x", "y"], newLines: ["x", "z"], kinds: " -+", endOfFile: false, patchLine: 4 }] });
});

test("malformed patches are refused naming the line", () => {
  const bad: Array<[string, RegExp]> = [
    ["*** Update File: a\n x\n*** End Patch", /must start with "\*\*\* Begin Patch"/],
    ["*** Begin Patch\n*** Update File: a\n x\n", /must end with "\*\*\* End Patch"/],
    ["*** Begin Patch\n*** End Patch", /changes no file/],
    ["*** Begin Patch\n*** Frobnicate File: a\n*** End Patch", /patch line 2: expected/],
    ["*** Begin Patch\n*** Add File: a\nno plus\n*** End Patch", /patch line 3: every line of an added file starts with "\+"/],
    ["*** Begin Patch\n*** Update File: a\n*** End Patch", /patch line 2: "Update File: a" has no hunks/],
    ["*** Begin Patch\n*** Update File: a\n@@\n x\n?y\n*** End Patch", /patch line 5: a hunk line starts with/],
    ["*** Begin Patch\n*** Update File: a\n@@\n*** End Patch", /patch line 3: the hunk has no lines/],
    ["*** Begin Patch\n*** Add File: \n*** End Patch", /needs a path/],
    ["*** Begin Patch\n*** Delete File: a\n*** Delete File: a\n*** End Patch", /a is already changed at patch line 2/],
  ];
  for (const [patch, message] of bad) assert.throws(() => parsePatch(patch), (err: unknown) => err instanceof PatchError && message.test(err.message), patch);
});

test("hunks are placed in order, each after the previous one", () => {
  const text = "x\na\nx\nb\nx\n";
  const out = applyHunks("f", text, [
    { oldLines: ["x"], newLines: ["X1"], kinds: "-+", endOfFile: false, patchLine: 1 },
    { oldLines: ["x"], newLines: ["X2"], kinds: "-+", endOfFile: false, patchLine: 2 },
  ]);
  assert.equal(out, "X1\na\nX2\nb\nx\n");
});

test("an @@ anchor places the hunk after the named line", () => {
  const text = "def a():\n    return 1\ndef b():\n    return 1\n";
  const out = applyHunks("f.py", text, [{ anchor: "def b():", oldLines: ["    return 1"], newLines: ["    return 2"], kinds: "-+", endOfFile: false, patchLine: 3 }]);
  assert.equal(out, "def a():\n    return 1\ndef b():\n    return 2\n");
  assert.throws(() => applyHunks("f.py", text, [{ anchor: "def c():", oldLines: ["x"], newLines: ["y"], kinds: "-+", endOfFile: false, patchLine: 3 }]), /hunk 1 of f\.py \(patch line 3\): its "@@ def c\(\):" line is not in the file/);
});

test("End of File anchors a hunk at the end; pure additions go after the anchor or to the end", () => {
  const text = "k\nk\n";
  assert.equal(applyHunks("f", text, [{ oldLines: ["k"], newLines: ["K"], kinds: "-+", endOfFile: true, patchLine: 1 }]), "k\nK\n");
  assert.equal(applyHunks("f", "a\nb\n", [{ oldLines: [], newLines: ["c"], kinds: "+", endOfFile: false, patchLine: 1 }]), "a\nb\nc\n");
  assert.equal(applyHunks("f", "a\nb\n", [{ anchor: "a", oldLines: [], newLines: ["between"], kinds: "+", endOfFile: false, patchLine: 1 }]), "a\nbetween\nb\n");
});

test("context that differs only in trailing or surrounding whitespace still matches", () => {
  assert.equal(seekLines(["a  ", "b"], ["a", "b"], 0, false), 0);
  assert.equal(seekLines(["  a", "\tb"], ["a", "b"], 0, false), 0);
  assert.equal(seekLines(["a", "b"], ["a", "c"], 0, false), -1);
  const out = applyHunks("f", "if x:   \n    y()\n", [{ oldLines: ["if x:", "    y()"], newLines: ["if x:", "    z()"], kinds: " -+", endOfFile: false, patchLine: 1 }]);
  // The matched context line is the file's, trailing spaces and all.
  assert.equal(out, "if x:   \n    z()\n");
});

test("a hunk that does not fit says which hunk and shows the lines it looked for", () => {
  assert.throws(
    () => applyHunks("src/a.ts", "one\ntwo\n", [{ oldLines: ["three"], newLines: ["3"], kinds: "-+", endOfFile: false, patchLine: 7 }]),
    (err: unknown) => err instanceof PatchError && /hunk 1 of src\/a\.ts \(patch line 7\): these lines are not in the file:\n  three/.test(err.message),
  );
});

test("a file without a final newline keeps lacking it; a trailing empty context line stands for the final newline", () => {
  assert.equal(applyHunks("f", "a\nb", [{ oldLines: ["b"], newLines: ["c"], kinds: "-+", endOfFile: false, patchLine: 1 }]), "a\nc");
  assert.equal(applyHunks("f", "a\nb\n", [{ oldLines: ["b", ""], newLines: ["c", ""], kinds: "-+ ", endOfFile: false, patchLine: 1 }]), "a\nc\n");
});

test("context lines matched ignoring whitespace keep the file's own text; only + lines come from the patch", () => {
  // A tab-indented file patched with space-indented context.
  const [op] = parsePatch(["*** Begin Patch", "*** Update File: f.c", " int f() {", "     int a = 1;", "-    return a;", "+    return a + 1;", " }", "*** End Patch"].join("\n"));
  assert.ok(op?.kind === "update");
  assert.equal(applyHunks("f.c", "int f() {\n\tint a = 1;\n\treturn a;\n}\n", op.hunks), "int f() {\n\tint a = 1;\n    return a + 1;\n}\n");
});

test("a file with mixed line endings keeps every untouched line's ending; added lines take the ending of the line above", () => {
  const bytes = Buffer.from("a\r\nb\r\nc\r\nd\n");
  const file = decodeTextFile(bytes, "m.txt");
  const [op] = parsePatch("*** Begin Patch\n*** Update File: m.txt\n a\n-b\n+B\n+B2\n c\n*** End Patch");
  assert.ok(op?.kind === "update");
  assert.equal(encodeTextFile(file, applyHunks("m.txt", file.text, op.hunks)).toString(), "a\r\nB\r\nB2\r\nc\r\nd\n");
  // At the start of a hunk an added line takes the ending of the line it precedes.
  const [first] = parsePatch("*** Begin Patch\n*** Update File: m.txt\n+zero\n a\n*** End Patch");
  assert.ok(first?.kind === "update");
  assert.equal(applyHunks("m.txt", file.text, first.hunks), "zero\r\na\r\nb\r\nc\r\nd\n");
});

test("a patch naming one file twice, spelled differently, is refused before anything is written", () => {
  const spellings: Array<[string, string]> = [
    ["a.txt", "/data/a.txt"],
    ["./a.txt", "a.txt"],
    ["src/../a.txt", "/data//a.txt"],
    ["/data/x/a.txt", "x/./a.txt"],
  ];
  for (const [one, two] of spellings) {
    const patch = `*** Begin Patch\n*** Update File: ${one}\n-x\n+y\n*** Update File: ${two}\n-y\n+z\n*** End Patch`;
    assert.throws(() => parsePatch(patch), (err: unknown) => err instanceof PatchError && err.message.includes(`patch line 5: ${two} is already changed at patch line 2 (as ${one}: both are /data/`), patch);
  }
  // A move onto a file the patch also adds is the same file too.
  assert.throws(() => parsePatch("*** Begin Patch\n*** Update File: a\n*** Move to: /data/b\n*** Add File: b\n+b\n*** End Patch"), /b is already changed at patch line 2 \(as \/data\/b: both are \/data\/b\)/);
  // Different files stay allowed.
  assert.equal(parsePatch("*** Begin Patch\n*** Delete File: a.txt\n*** Delete File: /data/b/a.txt\n*** End Patch").length, 2);
});
