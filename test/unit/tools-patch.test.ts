// The apply_patch grammar: parsing (Add, Delete, Update with hunks, Move to, End of
// File) with errors that name the patch line, and placing hunks in a file's text.
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyHunks, parsePatch, PatchError, seekLines } from "../../host/tools/patch.js";

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
        { anchor: "def main():", oldLines: ["a = 1", "b = 2"], newLines: ["a = 1", "b = 3"], endOfFile: false, patchLine: 9 },
        { oldLines: ["last"], newLines: ["last", "appended"], endOfFile: true, patchLine: 13 },
      ],
    },
  ]);
});

test("the first hunk may omit its @@ line; CRLF patches and blank lines around the markers are accepted", () => {
  const ops = parsePatch("\r\n*** Begin Patch\r\n*** Update File: a.txt\r\n x\r\n-y\r\n+z\r\n*** End Patch\r\n\r\n");
  assert.equal(ops.length, 1);
  assert.deepEqual(ops[0], { kind: "update", path: "a.txt", patchLine: 3, hunks: [{ oldLines: ["x", "y"], newLines: ["x", "z"], endOfFile: false, patchLine: 4 }] });
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
    { oldLines: ["x"], newLines: ["X1"], endOfFile: false, patchLine: 1 },
    { oldLines: ["x"], newLines: ["X2"], endOfFile: false, patchLine: 2 },
  ]);
  assert.equal(out, "X1\na\nX2\nb\nx\n");
});

test("an @@ anchor places the hunk after the named line", () => {
  const text = "def a():\n    return 1\ndef b():\n    return 1\n";
  const out = applyHunks("f.py", text, [{ anchor: "def b():", oldLines: ["    return 1"], newLines: ["    return 2"], endOfFile: false, patchLine: 3 }]);
  assert.equal(out, "def a():\n    return 1\ndef b():\n    return 2\n");
  assert.throws(() => applyHunks("f.py", text, [{ anchor: "def c():", oldLines: ["x"], newLines: ["y"], endOfFile: false, patchLine: 3 }]), /hunk 1 of f\.py \(patch line 3\): its "@@ def c\(\):" line is not in the file/);
});

test("End of File anchors a hunk at the end; pure additions go after the anchor or to the end", () => {
  const text = "k\nk\n";
  assert.equal(applyHunks("f", text, [{ oldLines: ["k"], newLines: ["K"], endOfFile: true, patchLine: 1 }]), "k\nK\n");
  assert.equal(applyHunks("f", "a\nb\n", [{ oldLines: [], newLines: ["c"], endOfFile: false, patchLine: 1 }]), "a\nb\nc\n");
  assert.equal(applyHunks("f", "a\nb\n", [{ anchor: "a", oldLines: [], newLines: ["between"], endOfFile: false, patchLine: 1 }]), "a\nbetween\nb\n");
});

test("context that differs only in trailing or surrounding whitespace still matches", () => {
  assert.equal(seekLines(["a  ", "b"], ["a", "b"], 0, false), 0);
  assert.equal(seekLines(["  a", "\tb"], ["a", "b"], 0, false), 0);
  assert.equal(seekLines(["a", "b"], ["a", "c"], 0, false), -1);
  const out = applyHunks("f", "if x:   \n    y()\n", [{ oldLines: ["if x:", "    y()"], newLines: ["if x:", "    z()"], endOfFile: false, patchLine: 1 }]);
  assert.equal(out, "if x:\n    z()\n");
});

test("a hunk that does not fit says which hunk and shows the lines it looked for", () => {
  assert.throws(
    () => applyHunks("src/a.ts", "one\ntwo\n", [{ oldLines: ["three"], newLines: ["3"], endOfFile: false, patchLine: 7 }]),
    (err: unknown) => err instanceof PatchError && /hunk 1 of src\/a\.ts \(patch line 7\): these lines are not in the file:\n  three/.test(err.message),
  );
});

test("a file without a final newline keeps lacking it; a trailing empty context line stands for the final newline", () => {
  assert.equal(applyHunks("f", "a\nb", [{ oldLines: ["b"], newLines: ["c"], endOfFile: false, patchLine: 1 }]), "a\nc");
  assert.equal(applyHunks("f", "a\nb\n", [{ oldLines: ["b", ""], newLines: ["c", ""], endOfFile: false, patchLine: 1 }]), "a\nc\n");
});
