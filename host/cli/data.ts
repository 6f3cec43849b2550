// CLI commands for workspace data: export, import, restore, snapshot create|ls|rollback|rm,
// and the SSE progress of `rm --preserve-data` and `create --restore`. Long work draws a
// progress bar on stderr (bytes and files); stdout carries only the result (or, for
// export, the archive).
import fs from "node:fs";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import { ApiClient, CliError, apiError } from "./client.js";
import { replaceLocalFile } from "./local-file.js";

type Run = <A extends unknown[]>(fn: (...args: A) => Promise<number | void>) => (...args: A) => Promise<void>;

interface Helpers {
  api: () => ApiClient;
  run: Run;
  log: (line: string) => void;
  json: (value: unknown) => void;
  sseEvents: (body: AsyncIterable<Buffer | string>) => AsyncGenerator<{ event: string; data: unknown }>;
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

/** A bar of bytes (with the file count beside it); the total is known for uploads, else it grows. */
function byteBar(label: string, total?: number): { update(bytes: number, files?: number): void; stop(): void } {
  const bar = new cliProgress.SingleBar(
    { format: ` ${label} |{bar}| {mib} MiB{of} {files} files`, hideCursor: true, stream: process.stderr, noTTYOutput: false, notTTYSchedule: 1000 },
    cliProgress.Presets.shades_classic,
  );
  const t = total ?? 0;
  bar.start(Math.max(1, t), 0, { mib: "0.0", of: t ? ` of ${mib(t)}` : "", files: 0 });
  return {
    update(bytes, files) {
      if (!total && bytes > bar.getTotal()) bar.setTotal(bytes * 2);
      bar.update(Math.min(bytes, bar.getTotal()), { mib: (bytes / 1024 / 1024).toFixed(1), ...(files !== undefined ? { files } : {}) });
    },
    stop() {
      bar.stop();
    },
  };
}

/** Follows a data operation's SSE stream (phase, progress, complete | error); returns the result. */
async function followDataStream(h: Helpers, body: AsyncIterable<Buffer>, label: string): Promise<Record<string, unknown>> {
  let bar: ReturnType<typeof byteBar> | undefined;
  let result: Record<string, unknown> | undefined;
  try {
    for await (const e of h.sseEvents(body)) {
      const d = (e.data ?? {}) as Record<string, unknown>;
      if (e.event === "progress") {
        bar ??= byteBar(String(d.phase ?? label));
        bar.update(Number(d.bytes ?? 0), Number(d.files ?? 0));
      } else if (e.event === "complete") result = d;
      else if (e.event === "error") throw new CliError(`${String(d.message)} (${String(d.code)})`);
      else process.stderr.write(`${e.event}\n`);
    }
  } finally {
    bar?.stop();
  }
  if (result === undefined) throw new CliError("the server ended the stream without a result");
  return result;
}

export function registerDataCommands(program: Command, h: Helpers): void {
  program
    .command("export <bot>")
    .description("write the workspace's /data as a tar.gz to stdout (or --output FILE)")
    .option("-o, --output <file>", "write to this file instead of stdout")
    .action(
      h.run(async (bot: string, opts: { output?: string }) => {
        if (opts.output === undefined && process.stdout.isTTY) throw new CliError("the archive is binary: redirect stdout (memoh-workspace export BOT > data.tar.gz) or use --output");
        const res = await h.api().raw("POST", `/bots/${bot}/container/data/export`);
        if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
        const bar = byteBar("exporting");
        let n = 0;
        const counted = (dest: NodeJS.WritableStream, end: boolean) =>
          new Writable({
            write(chunk: Buffer, _enc, cb) {
              n += chunk.byteLength;
              bar.update(n);
              if (dest.write(chunk)) cb();
              else dest.once("drain", () => cb());
            },
            final(cb) {
              if (end) dest.end(cb);
              else cb();
            },
          });
        try {
          // To a file: a temp file renamed over it at the end, so an export that breaks
          // off leaves an earlier archive of that name as it was (local-file.ts).
          if (opts.output !== undefined) await replaceLocalFile(opts.output, (out) => pipeline(res.body, counted(out, true)), 0o600);
          else await pipeline(res.body, counted(process.stdout, false));
        } catch (err) {
          res.body.destroy();
          const kept = opts.output === undefined ? "" : (err as { existed?: boolean }).existed ? `; ${opts.output} was left unchanged` : `; ${opts.output} was not created`;
          throw new CliError(`the export broke off after ${n} bytes: ${(err as Error).message}${kept}`);
        } finally {
          bar.stop();
        }
        process.stderr.write(`exported ${mib(n)} (compressed)\n`);
      }),
    );

  program
    .command("import <bot> <file>")
    .description("replace the workspace's /data with a tar.gz, all or nothing (the workspace restarts)")
    .action(
      h.run(async (bot: string, file: string) => {
        let size: number;
        try {
          size = fs.statSync(file).size;
        } catch (err) {
          throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
        }
        const bar = byteBar("uploading", size);
        let sent = 0;
        const stream = fs.createReadStream(file);
        stream.on("data", (c) => {
          sent += c.length;
          bar.update(sent);
        });
        let res;
        try {
          res = await h.api().raw("POST", `/bots/${bot}/container/data/import`, { body: stream, headers: { "content-type": "application/gzip", "content-length": String(size) } });
        } finally {
          bar.stop();
        }
        const text = await res.body.text();
        if (res.statusCode >= 400) throw apiError(res.statusCode, text);
        const r = JSON.parse(text) as { entries: number; bytes: number };
        h.log(`imported ${r.entries} entries (${mib(r.bytes)}) into ${bot}:/data`);
      }),
    );

  program
    .command("restore <bot>")
    .description("import the bot's preserved backup into its workspace, then remove the backup")
    .action(
      h.run(async (bot: string) => {
        const res = await h.api().raw("POST", `/bots/${bot}/container/data/restore`, { headers: { accept: "text/event-stream" } });
        if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
        const r = await followDataStream(h, res.body, "restoring");
        h.log(`restored ${String(r.entries)} entries (${mib(Number(r.bytes))}) into ${bot}:/data`);
      }),
    );

  const snap = program.command("snapshot").description("versions of a workspace (its rootfs with /data)");
  snap
    .command("create <bot>")
    .description("stop, commit a version, continue on top of it, start")
    .option("--name <name>", "a display name")
    .option("--json", "print JSON")
    .action(
      h.run(async (bot: string, opts: { name?: string; json?: boolean }) => {
        process.stderr.write("committing a version (the workspace restarts)…\n");
        const v = await h.api().json<{ version: number; display_name: string }>("POST", `/bots/${bot}/container/snapshots`, opts.name ? { display_name: opts.name } : {});
        if (opts.json) h.json(v);
        else h.log(`version ${v.version}${v.display_name ? ` (${v.display_name})` : ""}`);
      }),
    );
  snap
    .command("ls <bot>")
    .option("--json", "print JSON")
    .action(
      h.run(async (bot: string, opts: { json?: boolean }) => {
        const l = await h.api().json<{ versions: Array<{ version: number; display_name: string; source: string; created_at: string }>; lineage: number[] }>("GET", `/bots/${bot}/container/snapshots`);
        if (opts.json) return h.json(l);
        const current = new Set(l.lineage);
        const rows = [["VERSION", "SOURCE", "CREATED", "NAME"], ...l.versions.map((v) => [`${current.has(v.version) ? "*" : " "}${v.version}`, v.source, v.created_at, v.display_name])];
        const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
        for (const r of rows) h.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
      }),
    );
  snap
    .command("rollback <bot> <version>")
    .description("roll back to a version (the current state is saved first as a version)")
    .action(
      h.run(async (bot: string, version: string) => {
        process.stderr.write(`rolling back to version ${version} (the workspace restarts)…\n`);
        const r = await h.api().json<{ saved: { version: number } }>("POST", `/bots/${bot}/container/snapshots/rollback`, { version: Number(version) });
        h.log(`rolled back to version ${version}; the state before is version ${r.saved.version}`);
      }),
    );
  snap
    .command("rm <bot> <version>")
    .action(
      h.run(async (bot: string, version: string) => {
        if (!/^[1-9][0-9]*$/.test(version)) throw new CliError(`a version is a positive integer, got ${JSON.stringify(version)}`);
        await h.api().json("DELETE", `/bots/${bot}/container/snapshots/${version}`);
        h.log(`deleted version ${version}`);
      }),
    );
}

/** `rm --preserve-data`: the delete's SSE stream with a progress bar; returns the backup's path. */
export async function removePreserving(h: Helpers, bot: string): Promise<string> {
  const res = await h.api().raw("DELETE", `/bots/${bot}/container?preserve_data=true`, { headers: { accept: "text/event-stream" } });
  if (res.statusCode >= 400) throw apiError(res.statusCode, await res.body.text());
  const r = await followDataStream(h, res.body, "preserving");
  const backup = r.backup as { path?: string } | undefined;
  return backup?.path ?? "";
}
