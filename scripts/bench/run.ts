// `npm run bench`: every benchmark, each against a baseline measured in the same run.
import os from "node:os";
import { benchAgent } from "./agent.js";
import { benchApi } from "./api.js";
import { benchCreateStart } from "./containerd.js";
import { benchPull } from "./pull.js";
import { benchWorkspace } from "./workspace.js";
import { benchData } from "./data.js";
import { table, type Row } from "./stats.js";

const rows: Row[] = [];
rows.push(...(await benchAgent()));
rows.push(...(await benchWorkspace()));
rows.push(...(await benchApi()));
rows.push(...(await benchPull()));
rows.push(...(await benchCreateStart()));
rows.push(...(await benchData()));
console.log(`\n${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${new Date().toISOString()}\n`);
console.log(table(rows));
if (rows.some((r) => r.ok === false)) {
  console.log("\nsome targets were not met");
  process.exitCode = 1;
}
