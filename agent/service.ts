// ContainerService: each RPC lives in its own file, named after it.
import type { ServiceHandlers } from "../proto/rpc.js";
import type { ContainerService } from "../proto/gen/memoh/bridge/v1/bridge_pb.js";
import type { AgentContext } from "./context.js";
import { info } from "./info.js";
import { stat } from "./fs/stat.js";
import { listDir } from "./fs/list.js";
import { readFile } from "./fs/read.js";
import { writeFile } from "./fs/write.js";
import { readRaw } from "./fs/read-raw.js";
import { writeRaw } from "./fs/write-raw.js";
import { mkdir } from "./fs/mkdir.js";
import { rename } from "./fs/rename.js";
import { deleteFile } from "./fs/delete.js";
import { exec } from "./exec/exec.js";
import { mcpStdio } from "./mcp/stdio.js";

export function containerServiceHandlers(ctx: AgentContext): ServiceHandlers<typeof ContainerService> {
  return {
    info: () => info(ctx),
    stat: (req) => stat(ctx, req),
    listDir: (req) => listDir(ctx, req),
    readFile: (req, call) => readFile(ctx, req, call),
    writeFile: (req) => writeFile(ctx, req),
    readRaw: (req, call) => readRaw(ctx, req, call),
    writeRaw: (call) => writeRaw(ctx, call),
    mkdir: (req) => mkdir(ctx, req),
    rename: (req) => rename(ctx, req),
    deleteFile: (req) => deleteFile(ctx, req),
    exec: (call) => exec(ctx, call),
    mcpStdio: (call) => mcpStdio(ctx, call),
  };
}
