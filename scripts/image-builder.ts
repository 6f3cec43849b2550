// Images built from files on this machine (no network), as OCI image layouts. The
// tests use both; `npm run up` uses the glibc one as the default workspace image.
//   memoh.test/busybox:latest  only /bin/busybox (busybox-static) + applet symlinks
//   memoh.test/glibc:latest    bash (also /bin/sh), coreutils, procps' ps, and the glibc
//                              libraries ldd lists for them, laid out like the host
//
// The OCI building blocks (buildLayer, buildOciImage, writeOciLayout, readOciLayout) are in
// oci-layout.ts and re-exported here.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  buildLayer,
  buildOciImage,
  readOciLayout,
  sha256,
  writeOciLayout,
  type ImageConfigOptions,
  type LayerEntry,
  type OciImage,
} from "./oci-layout.js";

export * from "./oci-layout.js";

export const TEST_IMAGE_REFS = {
  busybox: "memoh.test/busybox:latest",
  glibc: "memoh.test/glibc:latest",
} as const;
export type TestImageName = keyof typeof TEST_IMAGE_REFS;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DEFAULT_IMAGE_CACHE_DIR = path.join(repoRoot, ".tmp", "images");

// ---------------------------------------------------------------------------------------------
// Root filesystems of the two test images.

function baseEntries(): LayerEntry[] {
  const dir = (p: string, mode = 0o755): LayerEntry => ({ path: p, type: "dir", mode });
  const file = (p: string, text: string): LayerEntry => ({ path: p, type: "file", mode: 0o644, data: Buffer.from(text) });
  return [
    ...["etc", "proc", "sys", "dev", "run", "data", "usr", "usr/bin", "usr/sbin"].map((p) => dir(p)),
    dir("tmp", 0o1777),
    dir("root", 0o700),
    file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
    file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
  ];
}

const HOST_BUSYBOX = "/bin/busybox";

function busyboxEntries(): LayerEntry[] {
  const entries = baseEntries();
  entries.push({ path: "bin", type: "dir", mode: 0o755 }, { path: "sbin", type: "dir", mode: 0o755 });
  entries.push({ path: "bin/busybox", type: "file", mode: 0o755, data: fs.readFileSync(HOST_BUSYBOX) });
  const applets = execFileSync(HOST_BUSYBOX, ["--list-full"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const applet of applets) {
    if (applet === "bin/busybox") continue;
    const dir = path.dirname(applet);
    if (dir !== ".") entries.push({ path: dir, type: "dir", mode: 0o755 });
    entries.push({ path: applet, type: "symlink", target: "/bin/busybox" });
  }
  return entries;
}

// What an LLM-driven shell expects to find; bash, ls, cat and ps are required.
const GLIBC_REQUIRED = ["bash", "ls", "cat", "ps"];
const GLIBC_OPTIONAL = [
  "echo", "sleep", "env", "true", "false", "mkdir", "rmdir", "rm", "cp", "mv", "ln", "id", "head",
  "tail", "wc", "sort", "uname", "kill", "grep", "sed", "chmod", "touch", "pwd", "date", "dirname",
  "basename", "readlink", "stat", "tr", "test", "du", "df", "find", "xargs", "tee", "sha256sum", "stty",
];

function findHostBinary(name: string): string | undefined {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/** Adds `hostPath` to `entries` as it is on the host, symlinks along the way included. */
function addHostPath(entries: Map<string, LayerEntry>, hostPath: string, depth = 0): void {
  if (depth > 16) throw new Error(`too many symlinks resolving ${hostPath}`);
  const parts = hostPath.split("/").filter(Boolean);
  let current = "/";
  for (let i = 0; i < parts.length; i++) {
    current = path.join(current, parts[i]!);
    const st = fs.lstatSync(current);
    const key = current.slice(1);
    if (st.isSymbolicLink()) {
      const target = fs.readlinkSync(current);
      entries.set(key, { path: key, type: "symlink", target });
      const resolved = path.resolve(path.dirname(current), target);
      addHostPath(entries, path.join(resolved, ...parts.slice(i + 1)), depth + 1);
      return;
    }
    if (st.isDirectory()) {
      if (!entries.has(key)) entries.set(key, { path: key, type: "dir", mode: st.mode & 0o7777 });
    } else if (st.isFile() && i === parts.length - 1) {
      entries.set(key, { path: key, type: "file", mode: st.mode & 0o7777, data: fs.readFileSync(current) });
    } else {
      throw new Error(`${current}: unsupported file type for a test image`);
    }
  }
}

function lddPaths(elf: string): string[] {
  const out = execFileSync("ldd", [elf], { encoding: "utf8" });
  const paths: string[] = [];
  for (const line of out.split("\n")) {
    const m = line.match(/=>\s+(\/\S+)/) ?? line.match(/^\s*(\/\S+)\s+\(/);
    if (m) paths.push(m[1]!);
    else if (line.includes("not found")) throw new Error(`ldd ${elf}: ${line.trim()}`);
  }
  return paths;
}

function glibcEntries(): LayerEntry[] {
  const entries = new Map<string, LayerEntry>();
  for (const e of baseEntries()) entries.set(e.path, e);
  // Debian's merged /usr: /bin, /sbin, /lib, /lib64 are symlinks into /usr; mirror them.
  for (const top of ["/bin", "/sbin", "/lib", "/lib64"]) if (fs.existsSync(top)) addHostPath(entries, top);
  const binaries: string[] = [];
  for (const name of [...GLIBC_REQUIRED, ...GLIBC_OPTIONAL]) {
    const p = findHostBinary(name);
    if (p === undefined && GLIBC_REQUIRED.includes(name)) throw new Error(`${name} not found on this machine`);
    if (p !== undefined) binaries.push(p);
  }
  const libs = new Set<string>();
  for (const bin of binaries) {
    addHostPath(entries, bin);
    for (const lib of lddPaths(bin)) libs.add(lib);
  }
  for (const lib of libs) addHostPath(entries, lib);
  // The host's /bin/sh is dash; this image's shell is bash.
  const bash = findHostBinary("bash")!;
  const shDir = path.dirname(fs.realpathSync(bash)).slice(1);
  entries.set(`${shDir}/sh`, { path: `${shDir}/sh`, type: "symlink", target: "bash" });
  return [...entries.values()];
}

const IMAGE_SOURCES: Record<TestImageName, { roots: () => string[]; entries: () => LayerEntry[] }> = {
  busybox: { roots: () => [HOST_BUSYBOX], entries: busyboxEntries },
  glibc: {
    roots: () => [...GLIBC_REQUIRED, ...GLIBC_OPTIONAL].map(findHostBinary).filter((p): p is string => p !== undefined),
    entries: glibcEntries,
  },
};

export interface TestImage {
  name: TestImageName;
  ref: string;
  /** OCI layout tar holding just this image. */
  tarPath: string;
  image: OciImage;
}

/**
 * The cache key covers this builder's source, oci-layout.ts's and the binaries the image
 * starts from; when the host's libraries change underneath, the cached image stays
 * self-consistent, so it is kept.
 */
function cacheKey(name: TestImageName): string {
  const self = Buffer.concat([fs.readFileSync(fileURLToPath(import.meta.url)), fs.readFileSync(fileURLToPath(new URL("./oci-layout.ts", import.meta.url)))]);
  const roots = IMAGE_SOURCES[name].roots().map((p) => {
    const st = fs.statSync(p);
    return `${p}:${st.size}:${st.mtimeMs}`;
  });
  return sha256(Buffer.concat([self, Buffer.from(roots.join("\n"))]));
}

async function buildTestImage(name: TestImageName, cacheDir: string): Promise<TestImage> {
  const ref = TEST_IMAGE_REFS[name];
  const tarPath = path.join(cacheDir, `${name}.oci.tar`);
  const keyPath = path.join(cacheDir, `${name}.key`);
  const key = cacheKey(name);
  if (fs.existsSync(tarPath) && fs.existsSync(keyPath) && fs.readFileSync(keyPath, "utf8") === key) {
    const [image] = await readOciLayout(tarPath);
    if (image !== undefined && image.ref === ref) return { name, ref, tarPath, image };
  }
  const image = buildOciImage(ref, [await buildLayer(IMAGE_SOURCES[name].entries())]);
  await writeOciLayout([image], tarPath);
  fs.writeFileSync(keyPath, key);
  return { name, ref, tarPath, image };
}

/** Builds (or takes from the cache) both test images as OCI layout tars. */
export async function buildTestImages(cacheDir = DEFAULT_IMAGE_CACHE_DIR): Promise<Record<TestImageName, TestImage>> {
  const [busybox, glibc] = await Promise.all([buildTestImage("busybox", cacheDir), buildTestImage("glibc", cacheDir)]);
  return { busybox, glibc };
}

/** Builds one image of the given kind from host files under another name (e.g. the default workspace image). */
export async function buildHostImage(kind: TestImageName, ref: string, tarPath: string): Promise<OciImage> {
  const image = buildOciImage(ref, [await buildLayer(IMAGE_SOURCES[kind].entries())]);
  await writeOciLayout([image], tarPath);
  return image;
}

/**
 * Another image on top of `base`: its layers plus one more made of `entries`, with its
 * own config (user, environment, working dir, entrypoint), as users' images are.
 */
export async function deriveImage(base: OciImage, ref: string, entries: LayerEntry[], options: ImageConfigOptions): Promise<OciImage> {
  const extra = await buildLayer(entries);
  const layers = base.layers.map((blob, i) => ({ blob, diffId: base.diffIds[i]! }));
  return buildOciImage(ref, [...layers, extra], options);
}
