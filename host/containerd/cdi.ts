// Container Device Interface: device specs from /etc/cdi and /var/run/cdi,
// resolved by fully-qualified name (`vendor.com/class=name`) and applied to an
// OCI spec as container edits (env, device nodes, mounts, hooks).
//
// Spec files are JSON (`*.json`) or YAML (`*.yaml`, `*.yml`, what
// `nvidia-ctk cdi generate` writes); both are checked by the same validation.
import fs from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import type { Hook, Hooks, LinuxDevice, Mount, Spec, SpecOpt } from "./spec.js";

export const DEFAULT_CDI_DIRS = ["/etc/cdi", "/var/run/cdi"];

export interface CdiDeviceNode {
  path: string;
  hostPath?: string;
  type?: "c" | "b" | "p" | "u";
  major?: number;
  minor?: number;
  fileMode?: number;
  /** Device cgroup access, e.g. "rw" (default "rwm"). */
  permissions?: string;
  uid?: number;
  gid?: number;
}

export interface CdiMount {
  hostPath: string;
  containerPath: string;
  type?: string;
  options?: string[];
}

export interface CdiHook {
  hookName: string;
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
  mounts?: CdiMount[];
  hooks?: CdiHook[];
}

export interface CdiDevice {
  name: string;
  containerEdits: CdiContainerEdits;
}

export interface CdiSpec {
  cdiVersion: string;
  /** `vendor.com/class` */
  kind: string;
  devices: CdiDevice[];
  containerEdits?: CdiContainerEdits;
}

export type CdiErrorCode = "unknown_device" | "invalid_name" | "invalid_spec" | "device_node";

export class CdiError extends Error {
  constructor(
    readonly code: CdiErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "CdiError";
  }
}

// ------------------------------------------------------------------ validation

const KIND_RE = /^[a-zA-Z0-9][a-zA-Z0-9.-]*[a-zA-Z0-9]\/[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const DEVICE_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.:-]*$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringArray(v: unknown, where: string): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) throw new CdiError("invalid_spec", `${where}: expected an array of strings`);
  return v as string[];
}

function optNumber(v: unknown, where: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new CdiError("invalid_spec", `${where}: expected a non-negative integer`);
  return v;
}

function reqString(v: unknown, where: string): string {
  if (typeof v !== "string" || v === "") throw new CdiError("invalid_spec", `${where}: expected a non-empty string`);
  return v;
}

function parseEdits(v: unknown, where: string): CdiContainerEdits {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new CdiError("invalid_spec", `${where}: expected an object`);
  const edits: CdiContainerEdits = {};
  const env = stringArray(v.env, `${where}.env`);
  if (env) edits.env = env;
  if (v.deviceNodes !== undefined && v.deviceNodes !== null) {
    if (!Array.isArray(v.deviceNodes)) throw new CdiError("invalid_spec", `${where}.deviceNodes: expected an array`);
    edits.deviceNodes = v.deviceNodes.map((d: unknown, i: number) => {
      const w = `${where}.deviceNodes[${i}]`;
      if (!isObject(d)) throw new CdiError("invalid_spec", `${w}: expected an object`);
      const type = d.type;
      if (type !== undefined && type !== "c" && type !== "b" && type !== "p" && type !== "u") throw new CdiError("invalid_spec", `${w}.type: expected c, b, p or u`);
      const node: CdiDeviceNode = { path: reqString(d.path, `${w}.path`) };
      if (d.hostPath !== undefined) node.hostPath = reqString(d.hostPath, `${w}.hostPath`);
      if (type !== undefined) node.type = type;
      for (const k of ["major", "minor", "fileMode", "uid", "gid"] as const) {
        const n = optNumber(d[k], `${w}.${k}`);
        if (n !== undefined) node[k] = n;
      }
      if (d.permissions !== undefined) {
        if (typeof d.permissions !== "string" || !/^[rwm]+$/.test(d.permissions)) throw new CdiError("invalid_spec", `${w}.permissions: expected letters of "rwm"`);
        node.permissions = d.permissions;
      }
      return node;
    });
  }
  if (v.mounts !== undefined && v.mounts !== null) {
    if (!Array.isArray(v.mounts)) throw new CdiError("invalid_spec", `${where}.mounts: expected an array`);
    edits.mounts = v.mounts.map((m: unknown, i: number) => {
      const w = `${where}.mounts[${i}]`;
      if (!isObject(m)) throw new CdiError("invalid_spec", `${w}: expected an object`);
      const mount: CdiMount = { hostPath: reqString(m.hostPath, `${w}.hostPath`), containerPath: reqString(m.containerPath, `${w}.containerPath`) };
      if (m.type !== undefined) mount.type = reqString(m.type, `${w}.type`);
      const options = stringArray(m.options, `${w}.options`);
      if (options) mount.options = options;
      return mount;
    });
  }
  if (v.hooks !== undefined && v.hooks !== null) {
    if (!Array.isArray(v.hooks)) throw new CdiError("invalid_spec", `${where}.hooks: expected an array`);
    edits.hooks = v.hooks.map((h: unknown, i: number) => {
      const w = `${where}.hooks[${i}]`;
      if (!isObject(h)) throw new CdiError("invalid_spec", `${w}: expected an object`);
      const hook: CdiHook = { hookName: reqString(h.hookName, `${w}.hookName`), path: reqString(h.path, `${w}.path`) };
      const args = stringArray(h.args, `${w}.args`);
      if (args) hook.args = args;
      const env = stringArray(h.env, `${w}.env`);
      if (env) hook.env = env;
      const timeout = optNumber(h.timeout, `${w}.timeout`);
      if (timeout !== undefined) hook.timeout = timeout;
      return hook;
    });
  }
  return edits;
}

/** Validates a parsed spec file (JSON or YAML) as a CDI spec; `source` names it in errors. */
export function parseCdiSpec(json: unknown, source: string): CdiSpec {
  if (!isObject(json)) throw new CdiError("invalid_spec", `${source}: a CDI spec must be an object (a JSON object or a YAML mapping)`);
  const kind = reqString(json.kind, `${source}: kind`);
  if (!KIND_RE.test(kind)) throw new CdiError("invalid_spec", `${source}: kind "${kind}" is not of the form vendor.com/class`);
  if (!Array.isArray(json.devices)) throw new CdiError("invalid_spec", `${source}: devices must be an array`);
  const devices = json.devices.map((d: unknown, i: number) => {
    if (!isObject(d)) throw new CdiError("invalid_spec", `${source}: devices[${i}] must be an object`);
    const name = reqString(d.name, `${source}: devices[${i}].name`);
    if (!DEVICE_NAME_RE.test(name)) throw new CdiError("invalid_spec", `${source}: device name "${name}" is invalid`);
    return { name, containerEdits: parseEdits(d.containerEdits, `${source}: devices[${i}].containerEdits`) };
  });
  return {
    cdiVersion: reqString(json.cdiVersion, `${source}: cdiVersion`),
    kind,
    devices,
    containerEdits: parseEdits(json.containerEdits, `${source}: containerEdits`),
  };
}

/**
 * Reads one spec file: `*.json` as JSON, `*.yaml`/`*.yml` as YAML 1.2 (one
 * document, unique keys). Values keep their YAML types, so `name: 0` is a
 * number and fails validation as it does in the reference implementation,
 * which reads YAML through JSON.
 */
export function readCdiSpecFile(file: string): CdiSpec {
  const text = fs.readFileSync(file, "utf8");
  let parsed: unknown;
  try {
    parsed = file.endsWith(".json") ? JSON.parse(text) : parseYamlDocument(text);
  } catch (err) {
    throw new CdiError("invalid_spec", `${file}: not valid ${file.endsWith(".json") ? "JSON" : "YAML"}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return parseCdiSpec(parsed, file);
}

/** Exactly one YAML 1.2 document; its warnings (an unknown tag, say) count as errors: a spec has none. */
function parseYamlDocument(text: string): unknown {
  const docs = parseAllDocuments(text, { version: "1.2", schema: "core", uniqueKeys: true, logLevel: "silent" });
  if (!Array.isArray(docs) || docs.length !== 1) throw new Error(`${Array.isArray(docs) ? docs.length : 0} YAML documents in it; a spec file holds one`);
  const doc = docs[0]!;
  const problem = doc.errors[0] ?? doc.warnings[0];
  // The first line names the problem and its place; the rest is an excerpt of the file.
  if (problem) throw new Error(problem.message.split("\n")[0]);
  return doc.toJS({ maxAliasCount: 100 });
}

// ------------------------------------------------------------------ registry

/** `vendor.com/class=name` → its parts; throws on anything else. */
export function parseQualifiedName(name: string): { kind: string; device: string } {
  const eq = name.indexOf("=");
  const kind = eq < 0 ? "" : name.slice(0, eq);
  const device = eq < 0 ? "" : name.slice(eq + 1);
  if (!KIND_RE.test(kind) || !DEVICE_NAME_RE.test(device)) {
    throw new CdiError("invalid_name", `"${name}" is not a fully-qualified CDI device name (vendor.com/class=name)`);
  }
  return { kind, device };
}

export interface ResolvedCdiDevice {
  /** Fully-qualified name. */
  name: string;
  /** Spec-level edits first, then the device's own. */
  edits: CdiContainerEdits[];
  source: string;
}

export interface CdiRegistryOptions {
  /** Searched in order; a device defined again in a later dir wins (default /etc/cdi, /var/run/cdi). */
  dirs?: string[];
}

export class CdiRegistry {
  private readonly devices = new Map<string, { spec: CdiSpec; device: CdiDevice; source: string }>();
  /** Files that could not be used, with why (a broken file does not hide the others). */
  readonly skipped: Array<{ file: string; reason: string }> = [];

  private constructor() {}

  /** Reads every spec file in `dirs` (missing dirs are fine). */
  static load(opts: CdiRegistryOptions = {}): CdiRegistry {
    const reg = new CdiRegistry();
    for (const dir of opts.dirs ?? DEFAULT_CDI_DIRS) {
      let names: string[];
      try {
        names = fs.readdirSync(dir).sort();
      } catch {
        continue;
      }
      for (const name of names) {
        if (!/\.(json|ya?ml)$/.test(name)) continue;
        const file = path.join(dir, name);
        try {
          reg.add(readCdiSpecFile(file), file);
        } catch (err) {
          reg.skipped.push({ file, reason: err instanceof Error ? err.message : String(err) });
        }
      }
    }
    return reg;
  }

  /** A registry of the given specs only (tests, callers that read specs themselves). */
  static fromSpecs(specs: CdiSpec[]): CdiRegistry {
    const reg = new CdiRegistry();
    for (const s of specs) reg.add(s, `<${s.kind}>`);
    return reg;
  }

  private add(spec: CdiSpec, source: string): void {
    for (const device of spec.devices) this.devices.set(`${spec.kind}=${device.name}`, { spec, device, source });
  }

  /** Every fully-qualified device name, sorted. */
  list(): string[] {
    return [...this.devices.keys()].sort();
  }

  /**
   * Resolves names to their edits. `vendor.com/class=all` is the spec's device
   * named "all" when there is one, else every device of that kind.
   */
  resolve(names: string[]): ResolvedCdiDevice[] {
    const out: ResolvedCdiDevice[] = [];
    for (const name of names) {
      const { kind, device } = parseQualifiedName(name);
      const exact = this.devices.get(name);
      const matches = exact ? [[name, exact] as const] : device === "all" ? [...this.devices].filter(([k]) => k.startsWith(`${kind}=`)) : [];
      if (matches.length === 0) {
        const known = this.list();
        throw new CdiError(
          "unknown_device",
          `CDI device "${name}" is not known; known devices: ${known.length > 0 ? known.join(", ") : "(none)"}${this.skipped.length > 0 ? `; skipped spec files: ${this.skipped.map((s) => `${s.file} (${s.reason})`).join("; ")}` : ""}`,
        );
      }
      for (const [fq, entry] of matches) {
        out.push({ name: fq, edits: [entry.spec.containerEdits ?? {}, entry.device.containerEdits], source: entry.source });
      }
    }
    return out;
  }
}

// ------------------------------------------------------------------ applying edits

/** Linux dev_t → major/minor (glibc's gnu_dev_major/minor). */
export function devMajorMinor(rdev: number): { major: number; minor: number } {
  const dev = BigInt(rdev);
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}

/** Fills in type/major/minor (and fileMode) of a node from the host device when the spec leaves them out. */
export function resolveDeviceNode(node: CdiDeviceNode): LinuxDevice {
  let type = node.type;
  let major = node.major;
  let minor = node.minor;
  let fileMode = node.fileMode;
  const needStat = type === undefined || ((type === "c" || type === "b") && (major === undefined || minor === undefined));
  if (needStat) {
    const hostPath = node.hostPath ?? node.path;
    let st: fs.Stats;
    try {
      st = fs.statSync(hostPath);
    } catch (err) {
      throw new CdiError("device_node", `CDI device node ${node.path}: cannot stat host device ${hostPath}: ${(err as Error).message}`, { cause: err });
    }
    const hostType = st.isCharacterDevice() ? "c" : st.isBlockDevice() ? "b" : st.isFIFO() ? "p" : undefined;
    if (hostType === undefined) throw new CdiError("device_node", `CDI device node ${node.path}: host path ${hostPath} is not a device`);
    type ??= hostType;
    const mm = devMajorMinor(st.rdev);
    major ??= mm.major;
    minor ??= mm.minor;
    fileMode ??= st.mode & 0o777;
  }
  const dev: LinuxDevice = { path: node.path, type: type!, major: major ?? 0, minor: minor ?? 0 };
  if (fileMode !== undefined) dev.fileMode = fileMode;
  if (node.uid !== undefined) dev.uid = node.uid;
  if (node.gid !== undefined) dev.gid = node.gid;
  return dev;
}

const HOOK_NAMES: ReadonlyArray<keyof Hooks> = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

/** Applies one set of container edits to a spec. */
export function applyContainerEdits(spec: Spec, edits: CdiContainerEdits): void {
  for (const entry of edits.env ?? []) {
    const key = entry.split("=", 1)[0]!;
    const i = spec.process.env.findIndex((e) => e === key || e.startsWith(`${key}=`));
    if (i >= 0) spec.process.env[i] = entry;
    else spec.process.env.push(entry);
  }
  for (const node of edits.deviceNodes ?? []) {
    const dev = resolveDeviceNode(node);
    spec.linux.devices = [...(spec.linux.devices ?? []).filter((d) => d.path !== dev.path), dev];
    if (dev.type === "c" || dev.type === "b") {
      spec.linux.resources.devices = [
        ...(spec.linux.resources.devices ?? []),
        { allow: true, type: dev.type, major: dev.major, minor: dev.minor, access: node.permissions ?? "rwm" },
      ];
    }
  }
  for (const m of edits.mounts ?? []) {
    const mount: Mount = { destination: m.containerPath, type: m.type ?? "bind", source: m.hostPath, options: m.options ?? ["bind"] };
    spec.mounts = [...spec.mounts.filter((x) => x.destination !== mount.destination), mount];
  }
  for (const h of edits.hooks ?? []) {
    const name = h.hookName as keyof Hooks;
    if (!HOOK_NAMES.includes(name)) throw new CdiError("invalid_spec", `CDI hook "${h.hookName}" is not an OCI hook name (${HOOK_NAMES.join(", ")})`);
    const hook: Hook = { path: h.path };
    if (h.args) hook.args = h.args;
    if (h.env) hook.env = h.env;
    if (h.timeout !== undefined) hook.timeout = h.timeout;
    spec.hooks = { ...spec.hooks, [name]: [...(spec.hooks?.[name] ?? []), hook] };
  }
}

/**
 * Applies the CDI devices `names` (fully qualified) from `registry` (default:
 * the spec files in /etc/cdi and /var/run/cdi). Spec-level edits of a spec file
 * are applied once even when several of its devices are requested.
 */
export function withCdiDevices(names: string[], registry?: CdiRegistry): SpecOpt {
  return (spec) => {
    const reg = registry ?? CdiRegistry.load();
    const appliedSpecEdits = new Set<CdiContainerEdits>();
    for (const dev of reg.resolve(names)) {
      const [specEdits, deviceEdits] = dev.edits as [CdiContainerEdits, CdiContainerEdits];
      if (!appliedSpecEdits.has(specEdits)) {
        appliedSpecEdits.add(specEdits);
        applyContainerEdits(spec, specEdits);
      }
      applyContainerEdits(spec, deviceEdits);
    }
  };
}
