// `npm run bench`: every benchmark, each against a baseline measured in the same run.
import os from "node:os";
import { benchAgent } from "./agent.js";
import { benchApi } from "./api.js";
import { benchCreateStart } from "./containerd.js";
import { benchPull } from "./pull.js";
import { benchTools } from "./tools.js";
import { benchWorkspace } from "./workspace.js";
import { benchData } from "./data.js";
import { table, type Row } from "./stats.js";

// `npm run bench -- api pull` runs only the named groups; no names runs them all.
const groups: Record<string, () => Promise<Row[]>> = {
  agent: benchAgent,
  workspace: benchWorkspace,
  api: benchApi,
  tools: benchTools,
  pull: benchPull,
  containerd: benchCreateStart,
  data: benchData,
};
const wanted = process.argv.slice(2);
const unknown = wanted.filter((g) => !(g in groups));
if (unknown.length > 0) {
  console.error(`unknown benchmark group ${unknown.join(", ")} (known: ${Object.keys(groups).join(", ")})`);
  process.exit(2);
}
const rows: Row[] = [];
for (const [name, run] of Object.entries(groups)) {
  if (wanted.length === 0 || wanted.includes(name)) rows.push(...(await run()));
}
console.log(`\n${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, ${new Date().toISOString()}\n`);
console.log(table(rows));
if (rows.some((r) => r.ok === false)) {
  console.log("\nsome targets were not met");
  process.exitCode = 1;
}
