// `memoh-workspace`: the command line. `serve` runs the orchestrator (manager + API);
// every other command talks to a running one over HTTP (MEMOH_URL, MEMOH_TOKEN).
// `cp` is in copy.ts, the data commands in data.ts, reading streamed answers in streams.ts.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Command, Option } from "commander";
import cliProgress from "cli-progress";
import WebSocket from "ws";
import { ApiClient, CliError, apiError, clientConfig } from "./client.js";
import { registerDataCommands, removePreserving } from "./data.js";
import { copy } from "./copy.js";
import { ndjsonLines, sseEvents } from "./streams.js";

type Out = { log(line: string): void; json(value: unknown): void };
const out: Out = {
  log: (line) => process.stdout.write(`${line}\n`),
  json: (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
};

const api = () => new ApiClient(clientConfig());

interface WorkspaceJson {
  bot_id: string;
  container_id: string;
  status: string;
  task: string;
  image: string | null;
  ip: string | null;
  limits: { memory_mb: number; cpus: number; pids: number } | null;
  oom_kills: number;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

function describeWorkspace(w: WorkspaceJson): string {
  const l = w.limits ? `${w.limits.memory_mb} MiB, ${w.limits.cpus} CPU, ${w.limits.pids} pids` : "-";
  return table([
    ["bot", w.bot_id],
    ["container", w.container_id],
    ["status", `${w.status} (task ${w.task})`],
    ["image", w.image ?? "-"],
    ["ip", w.ip ?? "-"],
    ["limits", l],
    ["oom kills", String(w.oom_kills)],
  ]);
}

async function create(bot: string, opts: { image?: string; gpu?: string[]; memory?: string; cpus?: string; pids?: string; json?: boolean; restore?: boolean }): Promise<void> {
  const limits = {
    ...(opts.memory ? { memory_mb: Number(opts.memory) } : {}),
    ...(opts.cpus ? { cpus: Number(opts.cpus) } : {}),
    ...(opts.pids ? { pids: Number(opts.pids) } : {}),
  };
  const body = {
    ...(opts.image ? { image: opts.image } : {}),
    ...(opts.gpu?.length ? { gpu: { devices: opts.gpu } } : {}),
    ...(Object.keys(limits).length ? { limits } : {}),
    ...(opts.restore ? { restore_data: true } : {}),
  };
  const res = await api().raw("POST", `/bots/${bot}/container`, { body: JSON.stringify(body), headers: { "content-type": "application/json", accept: "text/event-stream" } });
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  const bars = new cliProgress.MultiBar({ format: " {ref} |{bar}| {percentage}% {value}/{total} bytes", hideCursor: true, clearOnComplete: false, stream: process.stderr, noTTYOutput: false }, cliProgress.Presets.shades_classic);
  const perLayer = new Map<string, cliProgress.SingleBar>();
  let result: WorkspaceJson | undefined;
  let restoring: cliProgress.SingleBar | undefined;
  try {
    for await (const e of sseEvents(res.body)) {
      const d = e.data as Record<string, unknown>;
      if (e.event === "pulling") process.stderr.write(`pulling ${String(d.image)}\n`);
      else if (e.event === "pull_progress") {
        for (const layer of d.layers as Array<{ ref: string; offset: number; total: number }>) {
          const short = layer.ref.replace(/^sha256:/, "").slice(0, 12);
          let bar = perLayer.get(layer.ref);
          if (!bar) perLayer.set(layer.ref, (bar = bars.create(layer.total, layer.offset, { ref: short })));
          bar.update(layer.offset, { ref: short });
        }
      } else if (e.event === "progress") {
        // restoring: bytes and files so far (the total is not known in advance)
        const bytes = Number(d.bytes ?? 0);
        restoring ??= bars.create(Math.max(1, bytes * 2), 0, { ref: "restoring" });
        if (bytes > restoring.getTotal()) restoring.setTotal(bytes * 2);
        restoring.update(bytes, { ref: `restoring ${String(d.files ?? 0)} files` });
      } else if (e.event === "creating" || e.event === "starting" || e.event === "restoring") process.stderr.write(`${e.event}\n`);
      else if (e.event === "complete") result = (d.container as WorkspaceJson) ?? undefined;
      else if (e.event === "error") throw new CliError(`${String(d.message)} (${String(d.code)})`);
    }
  } finally {
    bars.stop();
  }
  if (!result) throw new CliError("the server ended the stream without a result");
  if (opts.json) out.json(result);
  else out.log(describeWorkspace(result));
}

async function execCommand(bot: string, argv: string[], opts: { cwd?: string; env?: string[]; user?: string; timeout?: string }): Promise<number> {
  if (argv.length === 0) throw new CliError("give the command after --, e.g. memoh-workspace exec BOT -- ls -la");
  const env: Record<string, string> = {};
  for (const kv of opts.env ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new CliError(`--env takes NAME=value, got ${JSON.stringify(kv)}`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const body = { argv, ...(opts.cwd ? { cwd: opts.cwd } : {}), ...(opts.env?.length ? { env } : {}), ...(opts.user ? { user: opts.user } : {}), ...(opts.timeout ? { timeout_s: Number(opts.timeout) } : {}) };
  const res = await api().raw("POST", `/bots/${bot}/container/exec`, { body: JSON.stringify(body), headers: { "content-type": "application/json", accept: "application/x-ndjson" } });
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  let code: number | undefined;
  for await (const line of ndjsonLines<{ stdout?: string; stderr?: string; exit?: { code: number; timed_out: boolean }; error?: { code: string; message: string } }>(res.body)) {
    if (line.stdout !== undefined) process.stdout.write(line.stdout);
    if (line.stderr !== undefined) process.stderr.write(line.stderr);
    if (line.exit) {
      if (line.exit.timed_out) process.stderr.write("memoh-workspace: the command timed out\n");
      code = line.exit.code;
    }
    if (line.error) throw new CliError(`${line.error.message} (${line.error.code})`);
  }
  if (code === undefined) throw new CliError("the server ended the stream without an exit status");
  return code;
}

async function shell(bot: string, opts: { command?: string }): Promise<number> {
  const cfg = clientConfig();
  const cols = process.stdout.columns ?? 80;
  const rows = process.stdout.rows ?? 24;
  const url = `${cfg.url.replace(/^http/, "ws")}/bots/${bot}/container/terminal?cols=${cols}&rows=${rows}${opts.command ? `&command=${encodeURIComponent(opts.command)}` : ""}`;
  const ws = new WebSocket(url, ["memoh.terminal"], { headers: cfg.token ? { authorization: `Bearer ${cfg.token}` } : {} });
  return new Promise<number>((resolve, reject) => {
    const stdin = process.stdin;
    const restore = () => {
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      process.off("SIGWINCH", onResize);
    };
    const onResize = () => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ resize: { cols: process.stdout.columns, rows: process.stdout.rows } }));
    };
    ws.on("unexpected-response", (_req, res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => reject(apiError(res.statusCode ?? 500, text)));
    });
    ws.on("open", () => {
      if (stdin.isTTY) stdin.setRawMode(true);
      stdin.on("data", (d: Buffer) => ws.send(d, { binary: true }));
      stdin.resume();
      process.on("SIGWINCH", onResize);
    });
    ws.on("message", (data: Buffer, isBinary) => {
      if (isBinary) process.stdout.write(data);
    });
    ws.on("close", (code, reason) => {
      restore();
      if (code >= 4000 && code <= 4255) resolve(code - 4000);
      else if (code === 1000 || code === 1005) resolve(0);
      else reject(new CliError(`terminal closed: ${code} ${reason.toString()}`));
    });
    ws.on("error", (err) => {
      restore();
      reject(new CliError(`terminal: ${err.message}`));
    });
  });
}

export function buildCli(): Command {
  const program = new Command("memoh-workspace").description("Workspace containers for AI bots").showHelpAfterError();
  const run =
    <A extends unknown[]>(fn: (...args: A) => Promise<number | void>) =>
    async (...args: A) => {
      const code = await fn(...args);
      if (typeof code === "number") process.exitCode = code;
    };
  const dataHelpers = { api, run, log: out.log, json: out.json, sseEvents };

  program
    .command("serve")
    .description("run the orchestrator: workspace manager, supervisor and the HTTP API (MEMOH_LISTEN)")
    .option("--config <file>", "configuration file (default ./memoh-workspace.toml when present)")
    .action(
      run(async (opts: { config?: string }) => {
        const { serve } = await import("../api/serve.js");
        const server = await serve({ argv: opts.config ? ["--config", opts.config] : [] });
        process.stderr.write(`memoh-workspace: serving on ${server.url}\n`);
        const bin = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "memoh-workspace.mjs");
        const rel = path.relative(process.cwd(), bin);
        const cli = rel.startsWith("..") || path.isAbsolute(rel) ? bin : `./${rel}`;
        const where = server.adminTokenFile ? `the admin token is in ${server.adminTokenFile}` : "the admin token is MEMOH_ADMIN_TOKEN";
        process.stderr.write(`memoh-workspace: ${where}; the CLI reads it. Try:\n  ${cli} create my-bot\n  ${cli} exec my-bot -- echo hello\n`);
        const stop = () => void server.close().then(() => process.exit(0));
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
        await new Promise(() => undefined);
      }),
    );

  program
    .command("ls")
    .description("list workspaces")
    .option("--status <status>", "only workspaces in this status")
    .option("--json", "print JSON")
    .action(
      run(async (opts: { status?: string; json?: boolean }) => {
        const client = api();
        const all: WorkspaceJson[] = [];
        for (let offset = 0; ; ) {
          const page = await client.json<{ workspaces: WorkspaceJson[]; total: number }>("GET", `/bots?offset=${offset}&limit=1000${opts.status ? `&status=${encodeURIComponent(opts.status)}` : ""}`);
          all.push(...page.workspaces);
          offset += page.workspaces.length;
          if (offset >= page.total || page.workspaces.length === 0) break;
        }
        if (opts.json) return out.json(all);
        out.log(table([["BOT", "STATUS", "TASK", "IMAGE", "IP"], ...all.map((w) => [w.bot_id, w.status, w.task, w.image ?? "-", w.ip ?? "-"])]));
      }),
    );

  program
    .command("create <bot>")
    .description("create and start a bot's workspace (progress per image layer)")
    .option("--image <ref>", "image (default: the server's)")
    .option("--gpu <device...>", "CDI devices, e.g. nvidia.com/gpu=0")
    .option("--memory <mib>", "memory limit in MiB")
    .option("--cpus <n>", "CPU limit")
    .option("--pids <n>", "process limit")
    .option("--restore", "restore the bot's preserved data (from rm --preserve-data) into the new workspace before it starts")
    .option("--json", "print JSON")
    .action(run((bot: string, opts: Parameters<typeof create>[1]) => create(bot, opts)));

  for (const [name, description] of [
    ["status", "show a workspace"],
    ["start", "start a stopped workspace"],
    ["stop", "stop a workspace (its container and data stay)"],
  ] as const) {
    const cmd = program.command(`${name} <bot>`).description(description).option("--json", "print JSON");
    if (name === "stop") cmd.option("--timeout <s>", "seconds between SIGTERM and SIGKILL");
    cmd.action(
      run(async (bot: string, opts: { json?: boolean; timeout?: string }) => {
        const client = api();
        const w =
          name === "status"
            ? await client.json<WorkspaceJson>("GET", `/bots/${bot}/container`)
            : await client.json<WorkspaceJson>("POST", `/bots/${bot}/container/${name}`, name === "stop" && opts.timeout ? { timeout_s: Number(opts.timeout) } : {});
        if (opts.json) out.json(w);
        else out.log(describeWorkspace(w));
      }),
    );
  }

  program
    .command("rm <bot>")
    .description("delete a workspace (task, container, its files)")
    .option("--preserve-data", "back /data up to <data_root>/backups/<bot>.tar.gz first (the delete is aborted when that fails)")
    .action(
      run(async (bot: string, opts: { preserveData?: boolean }) => {
        if (opts.preserveData) {
          const backup = await removePreserving(dataHelpers, bot);
          out.log(`deleted the workspace of ${bot}; its data is kept in ${backup}`);
          return;
        }
        await api().json("DELETE", `/bots/${bot}/container`);
        out.log(`deleted the workspace of ${bot}`);
      }),
    );

  registerDataCommands(program, dataHelpers);

  program
    .command("exec <bot> [command...]")
    .description("run a command in a workspace (after --); exits with its exit code")
    .option("--cwd <dir>", "working directory")
    .addOption(new Option("--env <NAME=value...>", "environment variables").default([]))
    .option("--user <user>", "run as this user (name or uid[:gid])")
    .option("--timeout <s>", "kill it after this many seconds")
    .action(run((bot: string, command: string[], opts: Parameters<typeof execCommand>[2]) => execCommand(bot, command, opts)));

  program
    .command("shell <bot>")
    .description("an interactive shell in a workspace")
    .option("--command <cmd>", "run this instead of /bin/sh")
    .action(run((bot: string, opts: { command?: string }) => shell(bot, opts)));

  program
    .command("cp <src> <dst>")
    .description("copy files or directories: BOT:/path on one side, a local path on the other")
    .action(run((src: string, dst: string) => copy(api(), src, dst)));

  program
    .command("events <bot>")
    .description("a workspace's lifecycle events, newest first")
    .option("--limit <n>", "how many", "50")
    .option("--json", "print JSON")
    .action(
      run(async (bot: string, opts: { limit: string; json?: boolean }) => {
        const r = await api().json<{ events: Array<{ type: string; created_at: string; payload: unknown }> }>("GET", `/bots/${bot}/container/events?limit=${Number(opts.limit)}`);
        if (opts.json) return out.json(r.events);
        for (const e of r.events) out.log(`${e.created_at}  ${e.type.padEnd(18)} ${JSON.stringify(e.payload)}`);
      }),
    );

  const token = program.command("token").description("bot tokens");
  token
    .command("create <bot>")
    .option("--name <name>", "a name to remember it by")
    .option("--expires-in <s>", "seconds until it expires")
    .option("--json", "print JSON")
    .action(
      run(async (bot: string, opts: { name?: string; expiresIn?: string; json?: boolean }) => {
        const r = await api().json<{ token: string; info: { id: string } }>("POST", "/tokens", { bot_id: bot, ...(opts.name ? { name: opts.name } : {}), ...(opts.expiresIn ? { expires_in_s: Number(opts.expiresIn) } : {}) });
        if (opts.json) return out.json(r);
        out.log(r.token);
        process.stderr.write(`token ${r.info.id} for bot ${bot}: shown once, keep it\n`);
      }),
    );
  token
    .command("ls")
    .option("--json", "print JSON")
    .action(
      run(async (opts: { json?: boolean }) => {
        const r = await api().json<{ tokens: Array<{ id: string; kind: string; bot_id: string | null; name: string; expires_at: string | null; revoked_at: string | null }> }>("GET", "/tokens");
        if (opts.json) return out.json(r.tokens);
        out.log(table([["ID", "KIND", "BOT", "NAME", "EXPIRES", "REVOKED"], ...r.tokens.map((t) => [t.id, t.kind, t.bot_id ?? "-", t.name || "-", t.expires_at ?? "-", t.revoked_at ?? "-"])]));
      }),
    );
  token
    .command("revoke <id>")
    .action(
      run(async (id: string) => {
        await api().json("DELETE", `/tokens/${id}`);
        out.log(`revoked ${id}`);
      }),
    );
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  try {
    await buildCli().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`memoh-workspace: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = err instanceof CliError ? err.exitCode : 1;
  }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) void main();
