// Text files as the editing tools see them: UTF-8 without NUL bytes, a byte order mark
// and CRLF line endings remembered on reading and restored on writing, so an edit
// changes the lines it names and nothing else.
import { isUtf8 } from "node:buffer";
import { Status, rpcCode } from "../../proto/rpc.js";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { WorkspaceError } from "../workspace/errors.js";
import { ToolError } from "./tool.js";

/** Files larger than this are not read whole by a tool (read, edit, apply_patch, resources). */
export const TOOL_FILE_MAX_BYTES = 16 * 1024 * 1024;
/** Contents up to this size go in one WriteFile message; larger ones are streamed with WriteRaw. */
export const SINGLE_MESSAGE_WRITE_BYTES = 1024 * 1024;
/** Bytes sniffed for NUL to call a file binary (as the agent's ReadFile does). */
const BINARY_SNIFF_BYTES = 8192;
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export interface TextFile {
  /** The text, without the BOM; with "\n" line endings when the file used CRLF throughout. */
  text: string;
  bom: boolean;
  /**
   * "\r\n" when every line ending of the file was CRLF and writing the normalized text
   * back reproduces the file exactly (then `text` was normalized to "\n"); else "\n" and
   * `text` holds the endings as they are.
   */
  eol: "\n" | "\r\n";
}

export function isBinary(bytes: Uint8Array): boolean {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return buf.subarray(0, BINARY_SNIFF_BYTES).indexOf(0) !== -1 || !isUtf8(buf);
}

/** The text of a file's bytes, or a ToolError for binary data. */
export function decodeTextFile(bytes: Uint8Array, displayPath: string): TextFile {
  if (isBinary(bytes)) throw new ToolError(`${displayPath} is a binary file (NUL bytes or not UTF-8); the text tools do not change binary files (use exec)`);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bom = buf.subarray(0, 3).equals(BOM);
  const raw = buf.toString("utf8", bom ? 3 : 0);
  const lf = countOf(raw, "\n");
  const crlf = countOf(raw, "\r\n");
  if (crlf > 0 && crlf === lf) {
    // Normalized only when encoding gives the very bytes back: "\r\r\n" is counted as
    // CRLF but would come back as "\r\n", changing a line nobody edited.
    const text = raw.replaceAll("\r\n", "\n");
    if (withCrlf(text) === raw) return { text, bom, eol: "\r\n" };
  }
  return { text: raw, bom, eol: "\n" };
}

function withCrlf(text: string): string {
  return text.replace(/\r?\n/g, "\r\n");
}

/** `text` (with "\n" endings when the file was CRLF) as the file's bytes: its BOM and line endings back. */
export function encodeTextFile(file: Pick<TextFile, "bom" | "eol">, text: string): Buffer {
  const body = file.eol === "\r\n" ? withCrlf(text) : text;
  return Buffer.concat([file.bom ? BOM : Buffer.alloc(0), Buffer.from(body, "utf8")]);
}

/** Text the model sent, in the form a file's text is matched in: CRLF as "\n" for a CRLF file. */
export function normalizeInput(file: Pick<TextFile, "eol">, text: string): string {
  return file.eol === "\r\n" ? text.replaceAll("\r\n", "\n") : text;
}

function countOf(s: string, needle: string): number {
  let n = 0;
  for (let i = s.indexOf(needle); i !== -1; i = s.indexOf(needle, i + needle.length)) n++;
  return n;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof WorkspaceError ? err.code === "not_found" : rpcCode(err) === Status.NOT_FOUND;
}

/** A path's Stat, or undefined when nothing is there. */
export async function statOrUndefined(c: BridgeClient, path: string) {
  try {
    return (await c.stat(path)).info;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * A file's bytes, at most `maxBytes` (ReadRaw, so the agent's 8 MiB ReadFile limit does
 * not apply). A missing file, a directory or a larger file is a ToolError that says what
 * to do instead.
 */
export async function readWholeFile(c: BridgeClient, path: string, opts: { maxBytes?: number; signal?: AbortSignal; tool: string } = { tool: "this tool" }): Promise<Buffer> {
  const maxBytes = opts.maxBytes ?? TOOL_FILE_MAX_BYTES;
  const info = await statOrUndefined(c, path);
  if (info === undefined) throw new ToolError(`${path} does not exist`);
  if (info.type === FileType.DIRECTORY) throw new ToolError(`${path} is a directory; use list to see what it holds`);
  if (info.type === FileType.OTHER) throw new ToolError(`${path} is not a regular file (a FIFO, socket or device); ${opts.tool} reads regular files only`);
  if (info.type === FileType.FILE && Number(info.size) > maxBytes) throw tooLarge(path, Number(info.size), maxBytes, opts.tool);
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of c.readRaw(path, { length: maxBytes + 1 }, { signal: opts.signal })) {
    total += chunk.byteLength;
    if (total > maxBytes) throw tooLarge(path, total, maxBytes, opts.tool);
    parts.push(chunk);
  }
  return Buffer.concat(parts, total);
}

function tooLarge(path: string, size: number, maxBytes: number, tool: string): ToolError {
  return new ToolError(
    `${path} is ${size > maxBytes ? `over ${maxBytes}` : size} bytes, more than ${tool} handles (${maxBytes / 1024 / 1024} MiB); ` +
      "search it with grep, or look at parts of it with exec (head, tail, sed -n 'A,Bp')",
  );
}

/** Writes `bytes` atomically (parents created): one message when small, streamed when large. */
export async function writeWholeFile(c: BridgeClient, path: string, bytes: Uint8Array, opts: { signal?: AbortSignal; mode?: number; onProgress?: (written: number) => void } = {}): Promise<void> {
  if (bytes.byteLength <= SINGLE_MESSAGE_WRITE_BYTES) {
    await c.writeFile(path, bytes, opts.mode ?? 0, { signal: opts.signal });
    return;
  }
  const chunk = 256 * 1024;
  async function* chunks() {
    for (let i = 0; i < bytes.byteLength; i += chunk) {
      yield bytes.subarray(i, i + chunk);
      opts.onProgress?.(Math.min(bytes.byteLength, i + chunk));
    }
  }
  await c.writeRaw(path, chunks(), { signal: opts.signal, mode: opts.mode ?? 0 });
}
