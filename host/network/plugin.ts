// Runs one CNI plugin binary per the CNI spec: parameters in the environment, the network
// configuration on stdin, the result (or an error object) on stdout. Every call has a
// deadline; a plugin that overruns it is killed with its process group.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { CniError, CniErrorCode } from "./errors.js";
import { isJsonObject, parseResult, parseVersionInfo, type CniResult, type CniVersionInfo, type JsonObject } from "./result.js";

export const DEFAULT_PLUGIN_DIRS = ["/opt/cni/bin", "/usr/lib/cni"];
export const DEFAULT_PLUGIN_TIMEOUT_MS = 30_000;
/** Plugin output beyond this is an error, not a result (a result is a few KiB). */
const MAX_OUTPUT_BYTES = 1024 * 1024;

export type CniCommand = "ADD" | "DEL" | "CHECK" | "VERSION";

export interface PluginInvocation {
  command: CniCommand;
  containerId?: string;
  /** Path of the network namespace; "" for DEL of a namespace that is gone. */
  netns?: string;
  ifName?: string;
  /** CNI_ARGS as key/value pairs (joined as K=V;K=V). */
  args?: Record<string, string>;
  /** The complete configuration the plugin reads from stdin. */
  config: JsonObject;
}

export interface PluginExecOptions {
  pluginDirs?: string[];
  timeoutMs?: number;
  /** Extra environment (tests); PATH is kept from this process. */
  env?: Record<string, string>;
}

function isExecutableFile(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/** The first executable named `type` in the plugin dirs. */
export function findPlugin(type: string, pluginDirs: string[] = DEFAULT_PLUGIN_DIRS): string {
  if (type === "" || type.includes("/") || type === "." || type === "..") {
    throw new CniError(CniErrorCode.PLUGIN_NOT_FOUND, `invalid plugin type ${JSON.stringify(type)}`);
  }
  for (const dir of pluginDirs) {
    const candidate = path.join(dir, type);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new CniError(CniErrorCode.PLUGIN_NOT_FOUND, `plugin ${JSON.stringify(type)} not found in ${pluginDirs.join(":")}`, {
    plugin: type,
  });
}

interface RawOutput {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  overflow: boolean;
}

function runBinary(binary: string, env: NodeJS.ProcessEnv, stdin: string, timeoutMs: number): Promise<RawOutput> {
  return new Promise((resolve, reject) => {
    // detached: the plugin leads its own process group, so a timeout also kills what it spawned
    // (the bridge plugin execs the IPAM plugin).
    const child = spawn(binary, [], { env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let size = 0;
    let timedOut = false;
    let overflow = false;
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    };
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_OUTPUT_BYTES) {
        overflow = true;
        killGroup();
        return;
      }
      into.push(chunk);
    };
    child.stdout.on("data", collect(stdout));
    child.stderr.on("data", collect(stderr));
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
        overflow,
      });
    });
    child.stdin.on("error", () => {}); // a plugin may exit without reading its config
    child.stdin.end(stdin);
  });
}

function cniArgs(args: Record<string, string> | undefined): string {
  if (args === undefined) return "";
  return Object.entries(args)
    .map(([k, v]) => {
      if (/[;=]/.test(k) || v.includes(";")) throw new CniError(CniErrorCode.INVALID_ENV, `CNI_ARGS entry ${k} contains ';' or '='`);
      return `${k}=${v}`;
    })
    .join(";");
}

/**
 * Executes the plugin and returns its parsed stdout (undefined when it printed nothing, as DEL
 * and CHECK do). A nonzero exit becomes a CniError with the plugin's code and msg.
 */
export async function execPlugin(type: string, inv: PluginInvocation, options: PluginExecOptions = {}): Promise<unknown> {
  const pluginDirs = options.pluginDirs ?? DEFAULT_PLUGIN_DIRS;
  const binary = findPlugin(type, pluginDirs);
  const timeoutMs = options.timeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    ...options.env,
    CNI_COMMAND: inv.command,
    CNI_CONTAINERID: inv.containerId ?? "",
    CNI_NETNS: inv.netns ?? "",
    CNI_IFNAME: inv.ifName ?? "",
    CNI_ARGS: cniArgs(inv.args),
    CNI_PATH: pluginDirs.join(":"),
  };
  let out: RawOutput;
  try {
    out = await runBinary(binary, env, JSON.stringify(inv.config), timeoutMs);
  } catch (err) {
    throw new CniError(CniErrorCode.EXEC_FAILURE, `cannot run ${binary}: ${err instanceof Error ? err.message : String(err)}`, {
      plugin: type,
      cause: err,
    });
  }
  if (out.timedOut) {
    throw new CniError(CniErrorCode.TIMEOUT, `${inv.command} timed out after ${timeoutMs} ms; killed`, { plugin: type });
  }
  if (out.overflow) {
    throw new CniError(CniErrorCode.EXEC_FAILURE, `${inv.command} wrote more than ${MAX_OUTPUT_BYTES} bytes`, { plugin: type });
  }
  const text = out.stdout.trim();
  let parsed: unknown;
  let parseError: string | undefined;
  if (text !== "") {
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      parseError = err instanceof Error ? err.message : String(err);
    }
  }
  if (out.code !== 0) {
    if (isJsonObject(parsed) && typeof parsed.code === "number" && Number.isInteger(parsed.code)) {
      const msg = typeof parsed.msg === "string" && parsed.msg !== "" ? parsed.msg : `${inv.command} failed`;
      const details = typeof parsed.details === "string" ? parsed.details : "";
      throw new CniError(parsed.code, msg, { details, plugin: type });
    }
    const status = out.signal !== null ? `killed by ${out.signal}` : `exited ${out.code}`;
    const said = (out.stderr.trim() || text).slice(0, 2000);
    throw new CniError(CniErrorCode.EXEC_FAILURE, `${inv.command} ${status}${said !== "" ? `: ${said}` : ""}`, { plugin: type });
  }
  if (parseError !== undefined) {
    throw new CniError(CniErrorCode.INVALID_RESULT, `${inv.command} printed invalid JSON: ${parseError}`, { plugin: type });
  }
  return parsed;
}

export async function pluginAdd(type: string, inv: Omit<PluginInvocation, "command">, options?: PluginExecOptions): Promise<CniResult> {
  const out = await execPlugin(type, { ...inv, command: "ADD" }, options);
  return parseResult(out, type);
}

/** Asks the plugin which spec versions it supports. */
export async function pluginVersion(type: string, cniVersion: string, options?: PluginExecOptions): Promise<CniVersionInfo> {
  const out = await execPlugin(type, { command: "VERSION", config: { cniVersion } }, options);
  return parseVersionInfo(out, type);
}
