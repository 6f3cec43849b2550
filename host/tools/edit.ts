// edit: replace one exact piece of a text file (or every occurrence with replace_all).
// The file is read whole, changed in memory with its BOM and line endings kept, and
// written back atomically; an ambiguous or missing match changes nothing and says why.
import * as z from "zod";
import { describeLines, planEdit } from "./edit-match.js";
import { decodeTextFile, encodeTextFile, normalizeInput, readWholeFile, writeWholeFile } from "./text-file.js";
import { defineTool, textResult, ToolError } from "./tool.js";

export const editTool = defineTool({
  name: "edit",
  title: "Edit a file",
  description:
    "Replaces old_text with new_text in a text file. old_text must occur exactly once (give enough surrounding lines to make it unique) unless replace_all is set. " +
    "An exact match is tried first, then one of whole lines that ignores differences in whitespace (indentation, trailing spaces). " +
    "The file keeps its line endings (CRLF stays CRLF) and byte order mark. Fails, changing nothing, when old_text is not found, is ambiguous, or nothing would change.",
  inputSchema: z.strictObject({
    path: z.string().min(1).max(4096).describe("The file: absolute, or relative to /data"),
    old_text: z.string().min(1).describe("The text to replace, as it is in the file"),
    new_text: z.string().describe("The text to put in its place"),
    replace_all: z.boolean().default(false).describe("Replace every occurrence instead of requiring exactly one"),
  }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
  async run(args, ctx) {
    return ctx.call(async (c) => {
      const file = decodeTextFile(await readWholeFile(c, args.path, { signal: ctx.signal, tool: "edit" }), args.path);
      const oldText = normalizeInput(file, args.old_text);
      const newText = normalizeInput(file, args.new_text);
      const plan = planEdit(file.text, oldText, newText, args.replace_all);
      if (!plan.ok) {
        switch (plan.problem) {
          case "empty":
            throw new ToolError("old_text is empty; to write a whole file use write");
          case "unchanged":
            throw new ToolError(`the edit would not change ${args.path}: new_text is the same as the text it replaces`);
          case "not_found":
            throw new ToolError(`old_text was not found in ${args.path} (not even as whole lines ignoring whitespace differences); read the file again and copy the text exactly`);
          case "ambiguous":
            throw new ToolError(
              `old_text matches ${plan.matches.length} places in ${args.path}${plan.mode === "whitespace" ? " (ignoring whitespace)" : ""}, at ${describeLines(plan.matches)}; ` +
                "include more surrounding lines to make it unique, or set replace_all to replace every one",
            );
        }
      }
      await writeWholeFile(c, args.path, encodeTextFile(file, plan.text), { signal: ctx.signal });
      const how = plan.mode === "whitespace" ? " (matched ignoring whitespace differences)" : "";
      return textResult(`Replaced ${plan.replaced} occurrence${plan.replaced === 1 ? "" : "s"} in ${args.path}${how}.`);
    });
  },
});
