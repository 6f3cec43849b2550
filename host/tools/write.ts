// write: a whole file, atomically (the agent writes a temp file and renames it), its
// parent directories created. Large contents are streamed to the agent in chunks,
// with progress notifications.
import * as z from "zod";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import { statOrUndefined, writeWholeFile } from "./text-file.js";
import { defineTool, textResult, ToolError } from "./tool.js";

export const WRITE_MAX_BYTES = 16 * 1024 * 1024;

export const writeTool = defineTool({
  name: "write",
  title: "Write a file",
  description:
    "Writes a whole file (UTF-8 text), replacing it if it exists; missing parent directories are created. " +
    "The file changes at once or not at all. Relative paths are relative to /data. To change part of a file, use edit or apply_patch.",
  inputSchema: z.strictObject({
    path: z.string().min(1).max(4096).describe("The file: absolute, or relative to /data"),
    content: z.string().describe("The file's new content"),
  }),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  async run(args, ctx) {
    const bytes = Buffer.from(args.content, "utf8");
    if (bytes.byteLength > WRITE_MAX_BYTES) throw new ToolError(`the content is ${bytes.byteLength} bytes, more than write accepts (16 MiB); write it in parts with exec, or generate it inside the workspace`);
    const existed = await ctx.call(async (c) => {
      const before = await statOrUndefined(c, args.path);
      if (before?.type === FileType.DIRECTORY) throw new ToolError(`${args.path} is a directory; give a file path`);
      let reported = 0;
      await writeWholeFile(c, args.path, bytes, {
        signal: ctx.signal,
        onProgress: (written) => {
          // A notification per MiB is plenty.
          if (written - reported >= 1024 * 1024 || written === bytes.byteLength) {
            reported = written;
            void ctx.progress(written, bytes.byteLength, `${written} of ${bytes.byteLength} bytes sent`);
          }
        },
      });
      return before !== undefined;
    });
    return textResult(`Wrote ${bytes.byteLength} bytes to ${args.path} (${existed ? "replaced the file" : "new file"}).`);
  },
});
