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
import { readTree } from "./fs/read-tree.js";
import { writeRaw } from "./fs/write-raw.js";
import { mkdir } from "./fs/mkdir.js";
import { rename } from "./fs/rename.js";
import { deleteFile } from "./fs/delete.js";
import { exec } from "./exec/exec.js";
import { mcpStdio } from "./mcp/stdio.js";
import { getJob, listJobs, readJobOutput, signalJob, startJob, waitJob } from "./jobs/rpc.js";
import { grep } from "./search/grep.js";
import { glob } from "./search/glob.js";

export function containerServiceHandlers(ctx: AgentContext): ServiceHandlers<typeof ContainerService> {
  return {
    info: () => info(ctx),
    stat: (req) => stat(ctx, req),
    listDir: (req) => listDir(ctx, req),
    readFile: (req, call) => readFile(ctx, req, call),
    writeFile: (req) => writeFile(ctx, req),
    readRaw: (req, call) => readRaw(ctx, req, call),
    readTree: (req, call) => readTree(ctx, req, call),
    writeRaw: (call) => writeRaw(ctx, call),
    mkdir: (req) => mkdir(ctx, req),
    rename: (req, call) => rename(ctx, req, call),
    deleteFile: (req) => deleteFile(ctx, req),
    exec: (call) => exec(ctx, call),
    mcpStdio: (call) => mcpStdio(ctx, call),
    startJob: (req) => startJob(ctx, req),
    listJobs: () => listJobs(ctx),
    getJob: (req) => getJob(ctx, req),
    readJobOutput: (req) => readJobOutput(ctx, req),
    waitJob: (req, call) => waitJob(ctx, req, call),
    signalJob: (req) => signalJob(ctx, req),
    grep: (req) => grep(ctx, req),
    glob: (req) => glob(ctx, req),
  };
}
