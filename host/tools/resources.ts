// The workspace's /data files as MCP resources, for clients that attach resources to a
// conversation: one resource template, file:///data/{+path}; resources/list offers the
// files directly in /data (a bounded page, not a walk of the tree).
import path from "node:path/posix";
import { FileType } from "../../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { BridgeClient } from "../bridge/client.js";
import { isBinary, readWholeFile } from "./text-file.js";
import { ToolError } from "./tool.js";

export const DATA_DIR = "/data";
export const DATA_RESOURCE_TEMPLATE = "file:///data/{+path}";
/** Files resources/list names at most. */
const LIST_MAX = 200;

const MIME_BY_EXTENSION: Record<string, string> = {
  ".txt": "text/plain",
  ".md": "text/markdown",
  ".json": "application/json",
  ".yaml": "application/yaml",
  ".yml": "application/yaml",
  ".toml": "application/toml",
  ".csv": "text/csv",
  ".html": "text/html",
  ".css": "text/css",
  ".js": "text/javascript",
  ".mjs": "text/javascript",
  ".ts": "text/x-typescript",
  ".py": "text/x-python",
  ".sh": "text/x-shellscript",
  ".xml": "application/xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".pdf": "application/pdf",
};

export function mimeTypeOf(p: string, binary?: boolean): string {
  return MIME_BY_EXTENSION[path.extname(p).toLowerCase()] ?? (binary ? "application/octet-stream" : "text/plain");
}

/**
 * The file a resource URI's `path` variable names, as a path relative to the data dir
 * (which the agent resolves: /data), never leaving it.
 */
export function dataPathOf(variable: string | string[] | undefined): string {
  const raw = Array.isArray(variable) ? variable.join(",") : (variable ?? "");
  let decoded: string;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    throw new ToolError(`the resource path ${JSON.stringify(raw)} is not valid percent-encoding`);
  }
  const rel = path.normalize(decoded);
  if (decoded === "" || decoded.includes("\0") || rel.startsWith("/") || rel === "." || rel === ".." || rel.startsWith("../")) {
    throw new ToolError(`the resource path ${JSON.stringify(decoded)} is not a file under ${DATA_DIR}`);
  }
  return rel;
}

/** The resource URI of a path relative to the data dir. */
export function dataUriOf(rel: string): string {
  return `file://${DATA_DIR}/${rel.split("/").map(encodeURIComponent).join("/")}`;
}

export async function listDataResources(c: BridgeClient): Promise<Array<{ uri: string; name: string; mimeType: string; size: number }>> {
  const page = await c.listDir({ path: ".", limit: LIST_MAX * 2 });
  return page.entries
    .filter((e) => e.type === FileType.FILE && !e.name.startsWith("."))
    .slice(0, LIST_MAX)
    .map((e) => ({ uri: dataUriOf(e.name), name: e.name, mimeType: mimeTypeOf(e.name), size: Number(e.size) }));
}

export async function readDataResource(c: BridgeClient, uri: string, rel: string, signal: AbortSignal): Promise<{ uri: string; mimeType: string; text: string } | { uri: string; mimeType: string; blob: string }> {
  const bytes = await readWholeFile(c, rel, { signal, tool: "a resource read" });
  if (isBinary(bytes)) return { uri, mimeType: mimeTypeOf(rel, true), blob: bytes.toString("base64") };
  return { uri, mimeType: mimeTypeOf(rel), text: bytes.toString("utf8") };
}
