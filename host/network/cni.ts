// Runs a network configuration list per the CNI spec (libcni's semantics): ADD through the
// plugins in order, each getting the previous one's result as prevResult; DEL in reverse
// order with the cached ADD result; CHECK with the cached result. The final ADD result is
// cached on disk (like /var/lib/cni/results) so DEL and CHECK work after a host restart.
import fs from "node:fs";
import path from "node:path";
import { CniError, CniErrorCode } from "./errors.js";
import type { NetworkConfigList, PluginConf } from "./conflist.js";
import { execPlugin, pluginAdd, pluginVersion, type PluginExecOptions } from "./plugin.js";
import { isJsonObject, parseResult, type CniResult, type CniVersionInfo, type JsonObject } from "./result.js";

export const DEFAULT_CACHE_DIR = "/var/lib/memoh/cni/cache";
export const DEFAULT_IFNAME = "eth0";

export interface CniRunnerOptions extends PluginExecOptions {
  /** Holds results/<network>-<container>-<ifname>; default /var/lib/memoh/cni/cache. */
  cacheDir?: string;
}

export interface RuntimeConf {
  containerId: string;
  /** The container's netns path; "" or absent when it is gone (DEL only). */
  netns?: string;
  /** Default eth0. */
  ifName?: string;
  /** CNI_ARGS. */
  args?: Record<string, string>;
  /** Values for the plugins' capabilities (e.g. portMappings), passed as runtimeConfig. */
  capabilityArgs?: Record<string, unknown>;
}

/** What the cache holds for one attachment. */
export interface CachedAttachment {
  kind: "cniCacheV1";
  containerId: string;
  ifName: string;
  networkName: string;
  netns: string;
  cniArgs: Record<string, string>;
  capabilityArgs: Record<string, unknown>;
  result: CniResult;
}

const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function checkRuntimeConf(rt: RuntimeConf): void {
  if (!CONTAINER_ID_RE.test(rt.containerId)) {
    throw new CniError(CniErrorCode.INVALID_ENV, `invalid container id ${JSON.stringify(rt.containerId)}`);
  }
  const ifName = rt.ifName ?? DEFAULT_IFNAME;
  if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(ifName)) throw new CniError(CniErrorCode.INVALID_ENV, `invalid interface name ${ifName}`);
}

/**
 * DEL failures that mean "what you want removed is not there": the bridge plugin of
 * containernetworking-plugins 1.1 fails its ipMasq teardown when the per-container chain is
 * gone (a flushed firewall, a failed ADD) because iptables-nft words the error differently
 * from what it expects; by then it has already released the lease and deleted the link.
 */
function isAlreadyGone(err: unknown): boolean {
  return err instanceof CniError && /Chain '[^']+' does not exist|No chain\/target\/match by that name/.test(err.message);
}

function versionAtLeast(version: string, min: string): boolean {
  const a = version.split(".").map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

export class CniRunner {
  readonly cacheDir: string;
  private readonly execOptions: PluginExecOptions;
  private versionsChecked: Promise<Map<string, CniVersionInfo>> | undefined;

  constructor(
    readonly list: NetworkConfigList,
    options: CniRunnerOptions = {},
  ) {
    this.cacheDir = options.cacheDir ?? DEFAULT_CACHE_DIR;
    const { cacheDir: _cacheDir, ...execOptions } = options;
    this.execOptions = execOptions;
  }

  /** The stdin config of one plugin: its own keys plus the list's name and version. */
  pluginConfig(plugin: PluginConf, prevResult: JsonObject | undefined, capabilityArgs: Record<string, unknown>): JsonObject {
    const config: JsonObject = { ...plugin, name: this.list.name, cniVersion: this.list.cniVersion };
    delete config.prevResult;
    delete config.runtimeConfig;
    if (prevResult !== undefined) config.prevResult = prevResult;
    const caps = isJsonObject(plugin.capabilities) ? plugin.capabilities : {};
    const runtimeConfig: JsonObject = {};
    for (const [cap, enabled] of Object.entries(caps)) {
      if (enabled === true && capabilityArgs[cap] !== undefined) runtimeConfig[cap] = capabilityArgs[cap];
    }
    if (Object.keys(runtimeConfig).length > 0) config.runtimeConfig = runtimeConfig;
    return config;
  }

  /** VERSION of every plugin type in the list; fails when one does not speak the list's version. */
  probeVersions(): Promise<Map<string, CniVersionInfo>> {
    this.versionsChecked ??= (async () => {
      const infos = new Map<string, CniVersionInfo>();
      for (const type of new Set(this.list.plugins.map((p) => p.type))) {
        const info = await pluginVersion(type, this.list.cniVersion, this.execOptions);
        if (!info.supportedVersions.includes(this.list.cniVersion)) {
          throw new CniError(
            CniErrorCode.INCOMPATIBLE_VERSION,
            `does not support cniVersion ${this.list.cniVersion} (supports ${info.supportedVersions.join(", ")})`,
            { plugin: type },
          );
        }
        infos.set(type, info);
      }
      return infos;
    })();
    // A failed probe (a plugin not installed yet) is retried on the next call.
    this.versionsChecked.catch(() => (this.versionsChecked = undefined));
    return this.versionsChecked;
  }

  cachePath(containerId: string, ifName: string = DEFAULT_IFNAME): string {
    return path.join(this.cacheDir, "results", `${this.list.name}-${containerId}-${ifName}`);
  }

  async add(rt: RuntimeConf): Promise<CniResult> {
    checkRuntimeConf(rt);
    if (rt.netns === undefined || rt.netns === "") throw new CniError(CniErrorCode.INVALID_ENV, "ADD needs a netns path");
    await this.probeVersions();
    const capabilityArgs = rt.capabilityArgs ?? {};
    let prev: CniResult | undefined;
    for (const plugin of this.list.plugins) {
      prev = await pluginAdd(
        plugin.type,
        {
          containerId: rt.containerId,
          netns: rt.netns,
          ifName: rt.ifName ?? DEFAULT_IFNAME,
          ...(rt.args !== undefined ? { args: rt.args } : {}),
          config: this.pluginConfig(plugin, prev?.raw, capabilityArgs),
        },
        this.execOptions,
      );
    }
    if (prev === undefined) throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, "network list has no plugins");
    return prev;
  }

  /** Records the final ADD result; DEL and CHECK read it back. */
  saveResult(rt: RuntimeConf, result: CniResult): void {
    checkRuntimeConf(rt);
    const entry: CachedAttachment = {
      kind: "cniCacheV1",
      containerId: rt.containerId,
      ifName: rt.ifName ?? DEFAULT_IFNAME,
      networkName: this.list.name,
      netns: rt.netns ?? "",
      cniArgs: rt.args ?? {},
      capabilityArgs: rt.capabilityArgs ?? {},
      result,
    };
    const file = this.cachePath(rt.containerId, rt.ifName);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, JSON.stringify({ ...entry, result: result.raw }), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  /** The cached ADD of a container, or undefined (an unreadable entry counts as absent). */
  cachedResult(containerId: string, ifName: string = DEFAULT_IFNAME): CachedAttachment | undefined {
    let doc: unknown;
    try {
      doc = JSON.parse(fs.readFileSync(this.cachePath(containerId, ifName), "utf8"));
    } catch {
      return undefined;
    }
    if (!isJsonObject(doc) || doc.kind !== "cniCacheV1" || doc.containerId !== containerId) return undefined;
    let result: CniResult;
    try {
      result = parseResult(doc.result);
    } catch {
      return undefined;
    }
    const strings = (v: unknown): Record<string, string> =>
      isJsonObject(v) ? Object.fromEntries(Object.entries(v).filter((e): e is [string, string] => typeof e[1] === "string")) : {};
    return {
      kind: "cniCacheV1",
      containerId,
      ifName,
      networkName: this.list.name,
      netns: typeof doc.netns === "string" ? doc.netns : "",
      cniArgs: strings(doc.cniArgs),
      capabilityArgs: isJsonObject(doc.capabilityArgs) ? doc.capabilityArgs : {},
      result,
    };
  }

  removeCachedResult(containerId: string, ifName: string = DEFAULT_IFNAME): void {
    fs.rmSync(this.cachePath(containerId, ifName), { force: true });
  }

  /** Container ids with a cached result on this network. */
  cachedContainerIds(ifName: string = DEFAULT_IFNAME): string[] {
    const dir = path.join(this.cacheDir, "results");
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    const prefix = `${this.list.name}-`;
    const suffix = `-${ifName}`;
    return names
      .filter((n) => n.startsWith(prefix) && n.endsWith(suffix) && !n.includes(".tmp-"))
      .map((n) => n.slice(prefix.length, n.length - suffix.length))
      .filter((id) => CONTAINER_ID_RE.test(id));
  }

  /**
   * DEL through the list in reverse order. Idempotent: a missing cache entry or netns is not
   * an error (plugins must tolerate both); every plugin runs even when an earlier one fails,
   * the first failure is thrown at the end and the cache entry is then kept for a retry.
   */
  async del(rt: RuntimeConf): Promise<void> {
    checkRuntimeConf(rt);
    const ifName = rt.ifName ?? DEFAULT_IFNAME;
    const cached = this.cachedResult(rt.containerId, ifName);
    const netns = rt.netns !== undefined && rt.netns !== "" && fs.existsSync(rt.netns) ? rt.netns : "";
    const capabilityArgs = rt.capabilityArgs ?? cached?.capabilityArgs ?? {};
    const args = rt.args ?? cached?.cniArgs;
    const prevResult = cached !== undefined && versionAtLeast(this.list.cniVersion, "0.4.0") ? cached.result.raw : undefined;
    let firstError: unknown;
    for (const plugin of [...this.list.plugins].reverse()) {
      try {
        await execPlugin(
          plugin.type,
          {
            command: "DEL",
            containerId: rt.containerId,
            netns,
            ifName,
            ...(args !== undefined ? { args } : {}),
            config: this.pluginConfig(plugin, prevResult, capabilityArgs),
          },
          this.execOptions,
        );
      } catch (err) {
        if (!isAlreadyGone(err)) firstError ??= err;
      }
    }
    if (firstError !== undefined) throw firstError;
    this.removeCachedResult(rt.containerId, ifName);
  }

  /** CHECK through the list with the cached result; throws when the attachment is not as cached. */
  async check(rt: RuntimeConf): Promise<void> {
    checkRuntimeConf(rt);
    if (!versionAtLeast(this.list.cniVersion, "0.4.0")) {
      throw new CniError(CniErrorCode.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later, the list has ${this.list.cniVersion}`);
    }
    if (rt.netns === undefined || rt.netns === "") throw new CniError(CniErrorCode.INVALID_ENV, "CHECK needs a netns path");
    const ifName = rt.ifName ?? DEFAULT_IFNAME;
    const cached = this.cachedResult(rt.containerId, ifName);
    if (cached === undefined) {
      throw new CniError(CniErrorCode.UNKNOWN_CONTAINER, `no cached ADD result for ${rt.containerId} on ${this.list.name}`);
    }
    if (this.list.disableCheck) return;
    for (const plugin of this.list.plugins) {
      await execPlugin(
        plugin.type,
        {
          command: "CHECK",
          containerId: rt.containerId,
          netns: rt.netns,
          ifName,
          args: rt.args ?? cached.cniArgs,
          config: this.pluginConfig(plugin, cached.result.raw, rt.capabilityArgs ?? cached.capabilityArgs),
        },
        this.execOptions,
      );
    }
  }
}
