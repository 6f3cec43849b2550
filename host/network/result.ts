// A plugin's ADD result (CNI spec "Success"), parsed from untrusted JSON. Only the shapes of
// versions 0.3.0 and later are accepted (interfaces/ips/routes/dns); unknown keys are kept in
// `raw` so chaining passes the plugin's result on untouched.
import { isIP } from "node:net";
import { CniError, CniErrorCode } from "./errors.js";

export type JsonObject = { [key: string]: unknown };

export interface CniInterface {
  name: string;
  mac?: string;
  /** The netns path for interfaces inside the container; absent for host-side interfaces. */
  sandbox?: string;
}

export interface CniIpConfig {
  /** CIDR notation, e.g. 10.88.0.2/16. */
  address: string;
  gateway?: string;
  /** Index into interfaces. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
}

export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIpConfig[];
  routes: CniRoute[];
  dns: JsonObject;
  /** The result exactly as the plugin printed it (what the next plugin gets as prevResult). */
  raw: JsonObject;
}

export interface CniVersionInfo {
  cniVersion: string;
  supportedVersions: string[];
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function invalid(plugin: string | undefined, message: string): CniError {
  return new CniError(CniErrorCode.INVALID_RESULT, `invalid result: ${message}`, plugin === undefined ? {} : { plugin });
}

function optionalString(o: JsonObject, key: string, where: string, plugin: string | undefined): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw invalid(plugin, `${where}.${key} is not a string`);
  return v;
}

function isCidr(s: string): boolean {
  const slash = s.lastIndexOf("/");
  if (slash < 0) return false;
  const ip = s.slice(0, slash);
  const prefix = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix)) return false;
  const family = isIP(ip);
  return family !== 0 && Number(prefix) <= (family === 4 ? 32 : 128);
}

export function parseResult(value: unknown, plugin?: string): CniResult {
  if (!isJsonObject(value)) throw invalid(plugin, "not a JSON object");
  const cniVersion = value.cniVersion;
  if (typeof cniVersion !== "string") throw invalid(plugin, "cniVersion missing");

  const interfaces: CniInterface[] = [];
  const rawIfaces = value.interfaces ?? [];
  if (!Array.isArray(rawIfaces)) throw invalid(plugin, "interfaces is not an array");
  rawIfaces.forEach((i: unknown, n) => {
    if (!isJsonObject(i) || typeof i.name !== "string") throw invalid(plugin, `interfaces[${n}] has no name`);
    const iface: CniInterface = { name: i.name };
    const mac = optionalString(i, "mac", `interfaces[${n}]`, plugin);
    const sandbox = optionalString(i, "sandbox", `interfaces[${n}]`, plugin);
    if (mac !== undefined) iface.mac = mac;
    if (sandbox !== undefined && sandbox !== "") iface.sandbox = sandbox;
    interfaces.push(iface);
  });

  const ips: CniIpConfig[] = [];
  const rawIps = value.ips ?? [];
  if (!Array.isArray(rawIps)) throw invalid(plugin, "ips is not an array");
  rawIps.forEach((i: unknown, n) => {
    if (!isJsonObject(i) || typeof i.address !== "string" || !isCidr(i.address)) {
      throw invalid(plugin, `ips[${n}].address is not an IP in CIDR notation`);
    }
    const ip: CniIpConfig = { address: i.address };
    const gateway = optionalString(i, "gateway", `ips[${n}]`, plugin);
    if (gateway !== undefined) {
      if (isIP(gateway) === 0) throw invalid(plugin, `ips[${n}].gateway is not an IP`);
      ip.gateway = gateway;
    }
    if (i.interface !== undefined && i.interface !== null) {
      if (!Number.isInteger(i.interface) || (i.interface as number) < 0 || (i.interface as number) >= interfaces.length) {
        throw invalid(plugin, `ips[${n}].interface is not an index into interfaces`);
      }
      ip.interface = i.interface as number;
    }
    ips.push(ip);
  });

  const routes: CniRoute[] = [];
  const rawRoutes = value.routes ?? [];
  if (!Array.isArray(rawRoutes)) throw invalid(plugin, "routes is not an array");
  rawRoutes.forEach((r: unknown, n) => {
    if (!isJsonObject(r) || typeof r.dst !== "string" || !isCidr(r.dst)) throw invalid(plugin, `routes[${n}].dst is not a CIDR`);
    const route: CniRoute = { dst: r.dst };
    const gw = optionalString(r, "gw", `routes[${n}]`, plugin);
    if (gw !== undefined) route.gw = gw;
    routes.push(route);
  });

  const dns = value.dns ?? {};
  if (!isJsonObject(dns)) throw invalid(plugin, "dns is not an object");
  return { cniVersion, interfaces, ips, routes, dns, raw: value };
}

export function parseVersionInfo(value: unknown, plugin?: string): CniVersionInfo {
  if (!isJsonObject(value) || typeof value.cniVersion !== "string") throw invalid(plugin, "VERSION reply has no cniVersion");
  const supported = value.supportedVersions;
  if (!Array.isArray(supported) || !supported.every((v): v is string => typeof v === "string")) {
    throw invalid(plugin, "VERSION reply has no supportedVersions list");
  }
  return { cniVersion: value.cniVersion, supportedVersions: supported };
}

/** The first IPv4 address of a result, without its prefix length, or undefined. */
export function firstIPv4(result: CniResult): { ip: string; prefixLength: number; gateway?: string } | undefined {
  for (const entry of result.ips) {
    const [ip, prefix] = entry.address.split("/") as [string, string];
    if (isIP(ip) !== 4 || ip === "0.0.0.0") continue;
    // An address on a host-side interface is not the container's.
    if (entry.interface !== undefined && result.interfaces[entry.interface]?.sandbox === undefined) continue;
    const found: { ip: string; prefixLength: number; gateway?: string } = { ip, prefixLength: Number(prefix) };
    if (entry.gateway !== undefined) found.gateway = entry.gateway;
    return found;
  }
  return undefined;
}
