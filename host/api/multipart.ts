// The one file of a multipart body, with busboy's parse errors (a body cut off before
// the file part, a broken boundary) answered as the client's mistake, not ours.
import type { MultipartFile } from "@fastify/multipart";
import type { FastifyRequest } from "fastify";
import { ApiError } from "./errors.js";

export async function multipartFile(req: FastifyRequest): Promise<MultipartFile> {
  const part = await req.file().catch((err: unknown) => {
    // The multipart plugin's own errors carry their 4xx status; busboy's are plain Errors.
    if (err instanceof Error && (err as { statusCode?: unknown }).statusCode === undefined) {
      throw new ApiError("invalid_argument", `the multipart body is malformed or ended early: ${err.message}`, { cause: err });
    }
    throw err;
  });
  if (part === undefined) throw new ApiError("invalid_argument", "the multipart body holds no file");
  return part;
}
