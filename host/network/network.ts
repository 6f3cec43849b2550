// Workspace networking on top of the CNI runner: one attachment per container, with the
// recoveries real hosts need (zero-MAC bridge, stale allocations), isolation between
// workspaces on the shared bridge, and startup hygiene after a crash or a host restart.
// Setup, teardown and hygiene stay in one class: they share its CNI runner, result cache
// and leases (options in options.ts, retry rules in retry.ts, links and rules in links.ts,
// the host and metadata guards in guards.ts).
import fs from "node:fs";
import path from "node:path";
import { isIP } from "node:net";
import { CniRunner, DEFAULT_CACHE_DIR, DEFAULT_IFNAME, type RuntimeConf } from "./cni.js";
import {
  DEFAULT_CONF_DIR,
  DEFAULT_NETWORK_NAME,
  bridgeName,
  ensureConfList,
  iptablesFirewallEnabled,
  ipMasqEnabled,
  parseIPv4Cidr,
  ipv4InCidr,
  ipamLeaseDir,
  ipv4Subnets,
  loadConfList,
  type NetworkConfigList,
} from "./conflist.js";
import { CniConfigError, CniError, CniErrorCode, NetworkSetupError } from "./errors.js";
import {
  bridgePorts,
  deleteLink,
  enableIpForward,
  ensureMasquerade,
  FIREWALL_CHAIN,
  firewallRuleAddresses,
  getLink,
  isPortIsolated,
  isZeroMac,
  removeFirewallChainsIfUnused,
  removeFirewallRules,
  removeIpMasqChain,
  ipMasqContainerIds,
  removeMasquerade,
  setPortIsolated,
} from "./links.js";
import { ensureGuard, guardChainNames, hostGuardRules, metadataGuardRules, removeGuard, type GuardSpec } from "./guards.js";
import { DEFAULT_PLUGIN_DIRS, DEFAULT_PLUGIN_TIMEOUT_MS } from "./plugin.js";
import { firstIPv4, type CniResult } from "./result.js";
import type { HygieneReport, NetworkAttachment, NetworkOptions, SetupOptions } from "./options.js";
import { MAC_ERROR, describe, isPermanent } from "./retry.js";

export { networkOptionsFromEnv, type HygieneReport, type NetworkAttachment, type NetworkOptions, type PortMapping, type SetupOptions } from "./options.js";

export class WorkspaceNetwork {
  readonly runner: CniRunner;
  /** The bridge the list's bridge plugin manages, if it has one. */
  readonly bridge: string | undefined;
  readonly isolation: boolean;
  /** Workspaces cannot open connections to the host itself (DNS excepted). */
  readonly blockHost: boolean;
  /** Workspaces' forwarded traffic to link-local addresses (cloud metadata) is dropped. */
  readonly blockMetadata: boolean;
  private readonly ifName: string;
  private readonly log: (message: string) => void;
  /** Setups under way: the bridge is never repaired meanwhile. */
  private setupsInFlight = 0;
  /** Guard changes run one at a time: concurrent setups would otherwise each add the rules. */
  private guardQueue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly list: NetworkConfigList,
    options: NetworkOptions = {},
  ) {
    this.runner = new CniRunner(list, {
      pluginDirs: options.pluginDirs ?? DEFAULT_PLUGIN_DIRS,
      cacheDir: options.cacheDir ?? DEFAULT_CACHE_DIR,
      timeoutMs: options.pluginTimeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS,
      ...(options.pluginEnv !== undefined ? { env: options.pluginEnv } : {}),
    });
    this.bridge = bridgeName(list);
    this.isolation = options.isolation ?? true;
    this.blockHost = options.blockHost ?? true;
    this.blockMetadata = options.blockMetadata ?? true;
    this.ifName = options.ifName ?? DEFAULT_IFNAME;
    this.log = options.log ?? ((message) => console.warn(`[network] ${message}`));
  }

  /** Loads the named list from the conf dir, writing the default first when it is absent. */
  static open(options: NetworkOptions = {}): WorkspaceNetwork {
    const confDir = options.confDir ?? DEFAULT_CONF_DIR;
    const name = options.defaults?.name ?? DEFAULT_NETWORK_NAME;
    const list =
      options.writeDefault === false ? loadConfList(confDir, name) : ensureConfList(confDir, options.defaults ?? {});
    if (list === undefined) throw new CniConfigError(`no network list named ${name}`, confDir);
    return new WorkspaceNetwork(list, options);
  }

  private rt(containerId: string, netns: string | undefined, setup?: SetupOptions): RuntimeConf {
    const rt: RuntimeConf = { containerId, ifName: this.ifName };
    if (netns !== undefined) rt.netns = netns;
    if (setup?.portMappings !== undefined && setup.portMappings.length > 0) {
      rt.capabilityArgs = { portMappings: setup.portMappings.map((m) => ({ protocol: "tcp", ...m })) };
    }
    return rt;
  }

  /**
   * Attaches the container's netns to the network and returns its IPv4 address. One retry:
   * a zero-MAC bridge is deleted first, stale allocations are released by a DEL first. A
   * failed attempt is always undone (DEL), so nothing leaks: no veth, no lease, no cache entry.
   */
  async setupNetwork(containerId: string, netnsPath: string, options: SetupOptions = {}): Promise<NetworkAttachment> {
    this.setupsInFlight++;
    try {
      return await this.setupNetworkOnce(containerId, netnsPath, options);
    } finally {
      this.setupsInFlight--;
    }
  }

  private async setupNetworkOnce(containerId: string, netnsPath: string, options: SetupOptions): Promise<NetworkAttachment> {
    if (!fs.existsSync(netnsPath)) throw new NetworkSetupError(containerId, `netns ${netnsPath} does not exist`);
    try {
      await this.ensureHostNetworking();
    } catch (err) {
      throw new NetworkSetupError(containerId, `cannot enable forwarding/masquerading: ${describe(err)}`, { cause: err });
    }
    const rt = this.rt(containerId, netnsPath, options);
    let lastError: unknown;
    for (let attempt = 1; attempt <= 2; attempt++) {
      try {
        return await this.attach(rt);
      } catch (err) {
        lastError = err;
        const cleanup = await this.teardown(rt).then(
          () => undefined,
          (delErr: unknown) => describe(delErr),
        );
        this.log(`setup of ${containerId}, attempt ${attempt}: ${describe(err)}${cleanup !== undefined ? `; DEL failed: ${cleanup}` : ""}`);
        if (err instanceof CniError && MAC_ERROR.test(err.message) && this.bridge !== undefined) {
          const deleted = await deleteLink(this.bridge).catch((linkErr: unknown) => {
            this.log(`cannot delete bridge ${this.bridge}: ${describe(linkErr)}`);
            return false;
          });
          if (deleted) this.log(`deleted bridge ${this.bridge} (lost its MAC); the bridge plugin recreates it`);
        }
        const final = attempt === 2 || isPermanent(err);
        if (final) {
          const message = err instanceof NetworkSetupError ? err.message.replace(/^network setup for \S+ failed: /, "") : describe(err);
          throw new NetworkSetupError(
            containerId,
            `${message}${cleanup !== undefined ? `; cleanup (DEL) also failed: ${cleanup}` : ""}` +
              (attempt === 2 ? " (after one retry)" : ""),
            { cause: err },
          );
        }
      }
    }
    throw new NetworkSetupError(containerId, describe(lastError), { cause: lastError });
  }

  private async attach(rt: RuntimeConf): Promise<NetworkAttachment> {
    const result = await this.runner.add(rt);
    // The firewall plugin inserts its jump at the top of FORWARD on its first ADD, ahead of
    // the metadata guard's: put ours back in front before the workspace starts.
    if (iptablesFirewallEnabled(this.list)) await this.syncGuards();
    const v4 = firstIPv4(result);
    if (v4 === undefined) {
      throw new NetworkSetupError(rt.containerId, `the plugins returned no usable IPv4 address (ips: ${JSON.stringify(result.ips)})`);
    }
    const hostInterface = result.interfaces.find((i) => i.sandbox === undefined && i.name !== this.bridge)?.name;
    let isolated = false;
    if (this.isolation && this.bridge !== undefined) {
      if (hostInterface === undefined) {
        throw new NetworkSetupError(rt.containerId, "isolation is on but the result names no host-side interface to isolate");
      }
      await setPortIsolated(hostInterface, true);
      isolated = true;
    }
    this.runner.saveResult(rt, result);
    const attachment: NetworkAttachment = { containerId: rt.containerId, ip: v4.ip, prefixLength: v4.prefixLength, isolated, result };
    if (v4.gateway !== undefined) attachment.gateway = v4.gateway;
    if (hostInterface !== undefined) attachment.hostInterface = hostInterface;
    return attachment;
  }

  /** DEL; idempotent: a container never attached, already removed, or whose netns is gone is fine. */
  async removeNetwork(containerId: string, netnsPath?: string): Promise<void> {
    await this.teardown(this.rt(containerId, netnsPath));
    await this.afterDel(containerId);
  }

  /**
   * DEL, then the firewall rules of the container's addresses, which the plugin removes only
   * when DEL carries the cached ADD result: not after a failed setup (nothing cached yet) nor
   * for a container whose cache entry was lost. The rules go even when DEL fails (the
   * container is leaving either way); DEL's error is still thrown.
   */
  private async teardown(rt: RuntimeConf): Promise<void> {
    const addresses = this.attachmentAddresses(rt.containerId);
    let delError: unknown;
    try {
      await this.runner.del(rt);
    } catch (err) {
      delError = err;
    }
    try {
      await this.removeFirewallRulesOf(rt.containerId, addresses);
    } catch (err) {
      if (delError === undefined) throw err;
      this.log(`cannot remove the firewall rules of ${rt.containerId}: ${describe(err)}`);
    }
    if (delError !== undefined) throw delError;
  }

  /** What DEL leaves when the netns is already gone: the ipMasq chain, a stray lease. */
  private async afterDel(containerId: string): Promise<void> {
    if (ipMasqEnabled(this.list)) await removeIpMasqChain(this.list.name, containerId);
    this.releaseLeases(new Set([containerId]), "owned");
  }

  /** IPv4 addresses a container holds on this network: its cached result's and its leases'. */
  private attachmentAddresses(containerId: string): string[] {
    const out = new Set<string>();
    const cached = this.runner.cachedResult(containerId, this.ifName);
    for (const ip of cached?.result.ips ?? []) {
      const addr = ip.address.split("/")[0] ?? "";
      if (isIP(addr) === 4) out.add(addr);
    }
    for (const lease of this.leases()) if (lease.owner === containerId && isIP(path.basename(lease.file)) === 4) out.add(path.basename(lease.file));
    return [...out];
  }

  /** Removes CNI-FORWARD rules of `addresses` unless another container now holds the address. */
  private async removeFirewallRulesOf(containerId: string, addresses: string[]): Promise<void> {
    if (!iptablesFirewallEnabled(this.list) || addresses.length === 0) return;
    const heldByOthers = new Set(this.leases().filter((l) => l.owner !== containerId).map((l) => path.basename(l.file)));
    for (const addr of addresses) if (!heldByOthers.has(addr)) await removeFirewallRules(addr);
  }

  /** CHECK of a running container's attachment; throws a CniError when it is not as set up. */
  async checkNetwork(containerId: string, netnsPath: string): Promise<void> {
    await this.runner.check(this.rt(containerId, netnsPath));
    const cached = this.runner.cachedResult(containerId, this.ifName);
    const hostInterface = cached?.result.interfaces.find((i) => i.sandbox === undefined && i.name !== this.bridge)?.name;
    if (this.isolation && hostInterface !== undefined) {
      if (!(await isPortIsolated(hostInterface))) {
        throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `port ${hostInterface} of ${containerId} is not isolated`);
      }
    }
    // Shared by every workspace, so restored in place rather than failing this one's CHECK.
    if (await this.syncGuards()) this.log(`restored the host/metadata guards of bridge ${this.bridge} (found missing or changed)`);
  }

  /** The cached attachment of a container (its IP after a restart of the host process) and the netns it was set up in. */
  cachedAttachment(containerId: string): { ip: string; netns: string; result: CniResult } | undefined {
    const cached = this.runner.cachedResult(containerId, this.ifName);
    const v4 = cached === undefined ? undefined : firstIPv4(cached.result);
    return cached !== undefined && v4 !== undefined ? { ip: v4.ip, netns: cached.netns, result: cached.result } : undefined;
  }

  /** IP forwarding on, the masquerade rule for the subnet when the list asks for ipMasq, the guards. */
  async ensureHostNetworking(): Promise<void> {
    if (this.bridge === undefined) return;
    enableIpForward();
    if (ipMasqEnabled(this.list)) {
      for (const subnet of ipv4Subnets(this.list)) await ensureMasquerade(subnet, this.masqComment());
    }
    await this.syncGuards();
  }

  /** The guards of our bridge, each with whether the configuration wants it. */
  private guardSpecs(): Array<{ spec: GuardSpec; wanted: boolean }> {
    if (this.bridge === undefined) return [];
    const names = guardChainNames(this.list.name, this.bridge);
    return [
      {
        spec: { chain: names.input, parent: "INPUT", bridge: this.bridge, comment: `${this.masqComment()} host`, rules: hostGuardRules(names.input) },
        wanted: this.blockHost,
      },
      {
        spec: {
          chain: names.forward,
          parent: "FORWARD",
          bridge: this.bridge,
          comment: `${this.masqComment()} metadata`,
          rules: metadataGuardRules(names.forward),
          before: FIREWALL_CHAIN,
        },
        wanted: this.blockMetadata,
      },
    ];
  }

  /**
   * Makes the guards match the configuration: the wanted ones exist (restored when missing,
   * changed or out of order), the unwanted ones are gone (a switch turned off takes effect
   * at the next start, setup or reconcile). True when anything changed. Serialized.
   */
  syncGuards(): Promise<boolean> {
    const run = this.guardQueue.then(async () => {
      let changed = false;
      for (const { spec, wanted } of this.guardSpecs()) {
        if (wanted ? await ensureGuard(spec) : await removeGuard(spec)) changed = true;
      }
      return changed;
    });
    this.guardQueue = run.catch(() => undefined);
    return run;
  }

  /**
   * Removes what ensureHostNetworking added (the guards whatever the switches say), and the firewall plugin's shared chains when no
   * container or administrator rule is left in them (IP forwarding stays on: others may need it).
   */
  async removeHostNetworking(): Promise<void> {
    for (const subnet of ipv4Subnets(this.list)) await removeMasquerade(subnet, this.masqComment());
    await this.guardQueue;
    for (const { spec } of this.guardSpecs()) await removeGuard(spec);
    if (iptablesFirewallEnabled(this.list)) await removeFirewallChainsIfUnused();
  }

  private masqComment(): string {
    return `memoh-cni:${this.list.name}`;
  }

  /**
   * Hygiene in one call, for a process that owns the network alone (startup, tests):
   * repairs the bridge, releases everything held by containers not in `liveIds`, and
   * removes firewall rules nobody holds. A process that runs lifecycle changes
   * concurrently uses the steps below instead, each container under its own lock.
   */
  async cleanupStale(liveIds: Iterable<string>): Promise<HygieneReport> {
    const live = new Set(liveIds);
    const report: HygieneReport = { released: [], errors: [] };
    const reason = await this.repairBridge().catch((err: unknown) => {
      report.errors.push(`bridge: ${describe(err)}`);
      return undefined;
    });
    if (reason !== undefined) report.bridgeDeleted = reason;
    if (ipMasqEnabled(this.list)) report.ipMasqChainsRemoved = [];
    for (const id of await this.attachedContainerIds(report.errors)) {
      if (live.has(id)) continue;
      try {
        const released = await this.releaseContainer(id);
        if (released.hadAttachment) report.released.push(id);
        if (released.chainRemoved) report.ipMasqChainsRemoved?.push(id);
      } catch (err) {
        report.errors.push(`${id}: ${describe(err)}`);
      }
    }
    if (this.bridge !== undefined) {
      try {
        report.guardsChanged = await this.syncGuards();
      } catch (err) {
        report.errors.push(`guards: ${describe(err)}`);
      }
    }
    if (iptablesFirewallEnabled(this.list)) {
      try {
        report.firewallRulesRemoved = await this.sweepOrphanedFirewallRules();
      } catch (err) {
        report.firewallRulesRemoved = [];
        report.errors.push(`firewall rules: ${describe(err)}`);
      }
    }
    return report;
  }

  /**
   * Deletes our bridge when it was left with a zero MAC or DOWN without ports (the
   * plugin recreates it on the next ADD). Never while a setup is under way: the bridge
   * plugin creates the bridge DOWN and brings it up a moment later.
   */
  async repairBridge(): Promise<"zero-mac" | "down" | undefined> {
    if (this.bridge === undefined || this.setupsInFlight > 0) return undefined;
    const link = await getLink(this.bridge);
    if (link === undefined || link.kind !== "bridge") return undefined;
    const reason = isZeroMac(link.address) ? "zero-mac" : link.operstate === "DOWN" ? "down" : undefined;
    if (reason === undefined || this.setupsInFlight > 0) return undefined;
    if ((await bridgePorts(this.bridge)).length > 0) return undefined;
    await deleteLink(this.bridge);
    this.log(`deleted bridge ${this.bridge} (${reason}); the bridge plugin recreates it`);
    return reason;
  }

  /**
   * Every container id that holds something on this network: a cached ADD result, an IP
   * lease, a masquerade chain. Hygiene compares them with the workspaces it knows.
   */
  async attachedContainerIds(errors: string[] = []): Promise<string[]> {
    const ids = new Set<string>();
    for (const id of this.runner.cachedContainerIds(this.ifName)) ids.add(id);
    for (const id of this.leaseOwners()) ids.add(id);
    if (ipMasqEnabled(this.list)) {
      try {
        for (const id of await ipMasqContainerIds(this.list.name)) ids.add(id);
      } catch (err) {
        errors.push(`masquerade chains: ${describe(err)}`);
      }
    }
    return [...ids];
  }

  /**
   * Releases everything `containerId` holds: DEL through its cached result (no netns),
   * the firewall rules of its addresses, its masquerade chain, its leases. Idempotent.
   * The caller makes sure the container is not being started meanwhile. Says whether it
   * held a cached result or lease, and whether it held only a masquerade chain (its
   * cache entry and lease were both lost) that is now removed.
   */
  async releaseContainer(containerId: string): Promise<{ hadAttachment: boolean; chainRemoved: boolean }> {
    const hadAttachment = this.runner.cachedResult(containerId, this.ifName) !== undefined || this.leaseOwners().includes(containerId);
    await this.teardown(this.rt(containerId, undefined));
    const chainRemoved = ipMasqEnabled(this.list) && (await removeIpMasqChain(this.list.name, containerId));
    this.releaseLeases(new Set([containerId]), "owned");
    return { hadAttachment, chainRemoved: chainRemoved && !hadAttachment };
  }

  /**
   * Removes CNI-FORWARD rules for addresses on our subnets that no lease and no cached
   * result holds: what is left when a container's cache entry and lease were both lost.
   * The rules are read before the holders: an ADD writes its lease before the firewall
   * plugin adds the rule, so a rule seen here whose address has no holder afterwards is
   * an orphan, never one of a setup under way.
   */
  async sweepOrphanedFirewallRules(): Promise<string[]> {
    if (!iptablesFirewallEnabled(this.list)) return [];
    const subnets = ipv4Subnets(this.list)
      .map((s) => parseIPv4Cidr(s))
      .filter((c): c is { network: number; prefix: number } => c !== undefined);
    const inOurSubnets = (addr: string): boolean => subnets.some((c) => ipv4InCidr(addr, c));
    const rules = await firewallRuleAddresses();
    const held = new Set<string>();
    for (const lease of this.leases()) held.add(path.basename(lease.file));
    for (const id of this.runner.cachedContainerIds(this.ifName)) for (const addr of this.attachmentAddresses(id)) held.add(addr);
    const removed: string[] = [];
    for (const addr of rules) {
      if (!inOurSubnets(addr) || held.has(addr)) continue;
      if (await removeFirewallRules(addr)) removed.push(addr);
    }
    return removed;
  }

  /** host-local lease files: named by IP, first line the container id. */
  private leases(): Array<{ file: string; owner: string }> {
    const dir = ipamLeaseDir(this.list);
    if (dir === undefined) return [];
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    const out: Array<{ file: string; owner: string }> = [];
    for (const name of names) {
      if (isIP(name) === 0) continue;
      const file = path.join(dir, name);
      try {
        const owner = fs.readFileSync(file, "utf8").split(/\r?\n/)[0]?.trim() ?? "";
        if (owner !== "") out.push({ file, owner });
      } catch {
        // raced with a release
      }
    }
    return out;
  }

  /** Container ids holding a host-local lease on this network. */
  leaseOwners(): string[] {
    return [...new Set(this.leases().map((l) => l.owner))];
  }

  /** Removes lease files whose owner is (or is not) in `ids`. */
  private releaseLeases(ids: Set<string>, which: "owned" | "not-owned"): void {
    for (const lease of this.leases()) {
      if (ids.has(lease.owner) === (which === "owned")) fs.rmSync(lease.file, { force: true });
    }
  }

  /** Ports currently on our bridge (diagnostics and tests). */
  async bridgePorts(): Promise<string[]> {
    return this.bridge === undefined ? [] : bridgePorts(this.bridge);
  }
}
