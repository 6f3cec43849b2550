// Builds the runtime bundle that the host bind-mounts read-only at /opt/memoh
// (DESIGN.md, "The runtime bundle"). Run: `npx tsx scripts/build-runtime.ts` (`npm run build`).
//
// runtime-bundle/out/
//   bin/node                  host node, patchelf'd: interpreter /opt/memoh/lib/ld-linux-x86-64.so.2,
//                             DT_RPATH /opt/memoh/lib
//   bin/tini                  Debian's tini-static (PID 1, `tini -g`)
//   lib/                      ld-linux-x86-64.so.2 + every library ldd lists for node and pty.node
//   agent.js                  esbuild bundle of agent/main.ts (CJS, node20, no node_modules)
//   package.json              {"type":"commonjs"}: agent.js and the toolkit scripts stay CommonJS even
//                             when the image has a /package.json saying "module"
//   node_modules/node-pty/    package.json + lib/*.js + build/Release/pty.node
//   vendor/<pkg>/             .proto files that bundled packages load through __dirname
//   toolkit/bin/{node,npm,npx}, toolkit/lib/node_modules/npm
//   workspace-contract.json   {bundleVersion, nodeVersion, protocolVersion, builtAt}
//
// node-pty: esbuild cannot inline a `.node` addon, so `node-pty` is external and the package is
// copied to out/node_modules/node-pty. The agent requires it by absolute path through
// agent/runtime-paths.ts `ptyModulePath()` (<RUNTIME_ROOT>/node_modules/node-pty); a bare
// `require("node-pty")` in agent.js would resolve to the same copy via Node's parent-dir lookup.
//
// Format: CJS, because the bundle must `require` a native addon and modules such as protobufjs
// reach `require` through eval; ESM output would need a createRequire shim for both.
// `import.meta.url` is defined as agent.js's own file URL. Top-level await is not available in
// the agent's entry (esbuild refuses it for CJS output).
//
// Incremental: the slow steps (copying + patching the 94 MiB node, copying npm) are skipped when a
// stamp of their inputs matches; everything else is rebuilt on every run. Files are replaced by
// rename, so a container that has the bundle mounted keeps running on the old inodes.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { PROTOCOL_VERSION } from "../proto/constants.js";

const RUNTIME_MOUNT = "/opt/memoh";
const LOADER_NAME = "ld-linux-x86-64.so.2";
const TINI_STATIC = "/usr/bin/tini-static";
const NPM_SOURCE = "/usr/lib/node_modules/npm";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const outDir = path.join(repoRoot, "runtime-bundle", "out");
const stampDir = path.join(outDir, ".stamps");
const ptyPackageDir = path.join(repoRoot, "node_modules", "node-pty");
const ptyAddon = path.join(ptyPackageDir, "build", "Release", "pty.node");

class BuildError extends Error {}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === "ENOENT") throw new BuildError(`${cmd} not found (run scripts/setup.sh)`);
    throw new BuildError(`${cmd} ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function requireFile(file: string, hint: string): void {
  if (!fs.existsSync(file)) throw new BuildError(`${file} is missing: ${hint}`);
}

/** Writes `data` next to `dest` and renames it into place. */
function writeAtomic(dest: string, data: string | Buffer, mode = 0o644): void {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, dest);
}

function copyAtomic(src: string, dest: string, mode: number): void {
  writeAtomic(dest, fs.readFileSync(src), mode);
}

/** Replaces the directory `dest` by a fresh copy made by `fill(tmpDir)`. */
function replaceDir(dest: string, fill: (tmpDir: string) => void): void {
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  fill(tmp);
  const old = `${dest}.old-${process.pid}`;
  if (fs.existsSync(dest)) fs.renameSync(dest, old);
  fs.renameSync(tmp, dest);
  fs.rmSync(old, { recursive: true, force: true });
}

function fileKey(file: string): string {
  const st = fs.statSync(file);
  return `${fs.realpathSync(file)}:${st.size}:${st.mtimeMs}`;
}

function stampMatches(name: string, key: string, outputs: string[]): boolean {
  const stampFile = path.join(stampDir, name);
  if (!fs.existsSync(stampFile) || fs.readFileSync(stampFile, "utf8") !== key) return false;
  return outputs.every((o) => fs.existsSync(o));
}

function writeStamp(name: string, key: string): void {
  writeAtomic(path.join(stampDir, name), key);
}

interface SharedLib {
  /** The name the dynamic linker looks for (ldd's left column, or the loader's basename). */
  soname: string;
  /** The file on this machine. */
  file: string;
}

/** Libraries `ldd` lists for an ELF file, including the loader, excluding the vDSO. */
function lddLibraries(elf: string): SharedLib[] {
  const libs: SharedLib[] = [];
  for (const line of run("ldd", [elf]).split("\n")) {
    const arrow = line.match(/^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/);
    const bare = line.match(/^\s*(\/\S+)\s+\(/);
    if (arrow) libs.push({ soname: arrow[1]!, file: arrow[2]! });
    else if (bare) libs.push({ soname: path.basename(bare[1]!), file: bare[1]! });
    else if (/=> not found/.test(line)) throw new BuildError(`ldd ${elf}: ${line.trim()}`);
  }
  if (!libs.some((l) => l.soname === LOADER_NAME)) {
    throw new BuildError(`ldd ${elf} lists no ${LOADER_NAME}; only x86-64 glibc hosts are supported`);
  }
  return libs;
}

function buildNodeAndLibs(nodeBinary: string): void {
  const patchelfVersion = run("patchelf", ["--version"]).trim();
  const key = [fileKey(nodeBinary), fileKey(ptyAddon), patchelfVersion, RUNTIME_MOUNT].join("\n");
  const nodeOut = path.join(outDir, "bin", "node");
  const libOut = path.join(outDir, "lib");
  if (stampMatches("node", key, [nodeOut, path.join(libOut, LOADER_NAME)])) return;

  const libs = new Map<string, string>();
  for (const lib of [...lddLibraries(nodeBinary), ...lddLibraries(ptyAddon)]) {
    const existing = libs.get(lib.soname);
    const real = fs.realpathSync(lib.file);
    if (existing !== undefined && existing !== real) {
      throw new BuildError(`${lib.soname} resolves to both ${existing} and ${real}`);
    }
    libs.set(lib.soname, real);
  }
  replaceDir(libOut, (tmp) => {
    for (const [soname, file] of libs) {
      fs.copyFileSync(file, path.join(tmp, soname));
      fs.chmodSync(path.join(tmp, soname), 0o755);
    }
  });

  // --force-rpath writes DT_RPATH instead of DT_RUNPATH: DT_RPATH wins over an LD_LIBRARY_PATH
  // set in the image and also applies to the libraries' own dependencies, so an image's
  // (different) glibc can never be mixed into our node.
  const tmpNode = `${nodeOut}.tmp-${process.pid}`;
  fs.mkdirSync(path.dirname(nodeOut), { recursive: true });
  fs.copyFileSync(nodeBinary, tmpNode);
  fs.chmodSync(tmpNode, 0o755);
  run("patchelf", [
    "--set-interpreter", `${RUNTIME_MOUNT}/lib/${LOADER_NAME}`,
    "--set-rpath", `${RUNTIME_MOUNT}/lib`,
    "--force-rpath",
    tmpNode,
  ]);
  fs.renameSync(tmpNode, nodeOut);
  writeStamp("node", key);
}

/**
 * Proves lib/ is complete without needing /opt/memoh on the host: the bundled loader resolves
 * node's and pty.node's libraries (each must come from out/lib, not from the host's default
 * dirs the loader falls back to), then runs the patched node.
 */
function checkPatchedNode(expectedVersion: string): void {
  const libDir = path.join(outDir, "lib");
  const loader = path.join(libDir, LOADER_NAME);
  const elves = [path.join(outDir, "bin", "node"), path.join(outDir, "node_modules", "node-pty", "build", "Release", "pty.node")];
  for (const elf of elves) {
    const listing = run(loader, ["--inhibit-cache", "--library-path", libDir, "--list", elf]);
    for (const m of listing.matchAll(/^\s*(\S+) => (\S+)/gm)) {
      if (path.dirname(path.resolve(m[2]!)) !== libDir) {
        throw new BuildError(`${path.basename(elf)}: ${m[1]} resolves to ${m[2]}, not to the bundle's lib/`);
      }
    }
  }
  const version = run(loader, ["--library-path", libDir, elves[0]!, "--version"]).trim();
  if (version !== expectedVersion) {
    throw new BuildError(`patched node reports ${version}, expected ${expectedVersion}`);
  }
}

function buildNodePty(): void {
  const dest = path.join(outDir, "node_modules", "node-pty");
  replaceDir(dest, (tmp) => {
    fs.copyFileSync(path.join(ptyPackageDir, "package.json"), path.join(tmp, "package.json"));
    fs.cpSync(path.join(ptyPackageDir, "lib"), path.join(tmp, "lib"), {
      recursive: true,
      filter: (src) => !/\.(test\.js|map)$/.test(src),
    });
    fs.mkdirSync(path.join(tmp, "build", "Release"), { recursive: true });
    fs.copyFileSync(ptyAddon, path.join(tmp, "build", "Release", "pty.node"));
  });
}

function buildToolkit(): void {
  const npmPackageJson = path.join(NPM_SOURCE, "package.json");
  requireFile(npmPackageJson, "npm is expected at /usr/lib/node_modules/npm (it ships with the nodejs package)");
  const toolkit = path.join(outDir, "toolkit");
  const npmOut = path.join(toolkit, "lib", "node_modules", "npm");
  const key = fileKey(npmPackageJson);
  if (!stampMatches("npm", key, [path.join(npmOut, "bin", "npm-cli.js")])) {
    replaceDir(npmOut, (tmp) => fs.cpSync(NPM_SOURCE, tmp, { recursive: true, verbatimSymlinks: true }));
    writeStamp("npm", key);
  }
  const bin = path.join(toolkit, "bin");
  fs.mkdirSync(bin, { recursive: true });
  const nodeLink = path.join(bin, "node");
  fs.rmSync(nodeLink, { force: true });
  fs.symlinkSync("../../bin/node", nodeLink);
  for (const [name, cli] of [["npm", "npm-cli.js"], ["npx", "npx-cli.js"]] as const) {
    writeAtomic(
      path.join(bin, name),
      `#!${RUNTIME_MOUNT}/bin/node\nrequire("../lib/node_modules/npm/bin/${cli}");\n`,
      0o755,
    );
  }
}

/**
 * Some bundled packages load data files relative to their own source file (grpc-js's
 * channelz/ORCA protos: `${__dirname}/../../proto`). In agent.js, `__dirname` would be the
 * bundle's directory, so this plugin gives every such module a `__dirname`/`__filename`
 * under out/vendor/ that mirrors its place in node_modules, and we copy the package's
 * .proto files there.
 */
function relocateDirnamePlugin(packagesUsingDirname: Set<string>): esbuild.Plugin {
  const nodeModules = path.join(repoRoot, "node_modules") + path.sep;
  return {
    name: "relocate-dirname",
    setup(build) {
      build.onLoad({ filter: /[\\/]node_modules[\\/].*\.c?js$/ }, async (args) => {
        const source = await fs.promises.readFile(args.path, "utf8");
        if (!/\b__(dirname|filename)\b/.test(source) || !args.path.startsWith(nodeModules)) return undefined;
        const rel = path.relative(nodeModules, args.path);
        packagesUsingDirname.add(packageDirOf(args.path));
        const prefix =
          `var __filename = require("path").join(__memoh_bundle_dir, "vendor", ${JSON.stringify(rel)});` +
          `var __dirname = require("path").dirname(__filename);\n`;
        return { contents: prefix + source, loader: "js", resolveDir: path.dirname(args.path) };
      });
    },
  };
}

function packageDirOf(file: string): string {
  let dir = path.dirname(file);
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new BuildError(`no package.json above ${file}`);
    dir = parent;
  }
  return dir;
}

function copyProtoFiles(packageDirs: Set<string>, vendorDir: string): void {
  const nodeModules = path.join(repoRoot, "node_modules");
  for (const pkg of packageDirs) {
    const files = fs.readdirSync(pkg, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".proto"));
    for (const f of files) {
      // Nested node_modules belong to other packages; they get their own entry if they need it.
      if (f.split(path.sep).includes("node_modules")) continue;
      const dest = path.join(vendorDir, path.relative(nodeModules, pkg), f);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.copyFileSync(path.join(pkg, f), dest);
    }
  }
}

async function buildAgent(): Promise<void> {
  const entry = path.join(repoRoot, "agent", "main.ts");
  requireFile(entry, "the agent entry point");
  const packagesUsingDirname = new Set<string>();
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: path.join(outDir, `agent.js.tmp-${process.pid}`),
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    external: ["node-pty"],
    banner: {
      js:
        "var __memoh_bundle_dir = __dirname;\n" +
        'var __memoh_import_meta_url = require("url").pathToFileURL(__filename).href;',
    },
    define: { "import.meta.url": "__memoh_import_meta_url" },
    plugins: [relocateDirnamePlugin(packagesUsingDirname)],
    keepNames: true,
    legalComments: "none",
    logLevel: "silent",
  });
  for (const w of result.warnings) {
    const [text] = await esbuild.formatMessages([w], { kind: "warning" });
    process.stderr.write(text ?? "");
  }
  fs.renameSync(path.join(outDir, `agent.js.tmp-${process.pid}`), path.join(outDir, "agent.js"));
  replaceDir(path.join(outDir, "vendor"), (tmp) => copyProtoFiles(packagesUsingDirname, tmp));
}

function readPackageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { version?: unknown };
  if (typeof pkg.version !== "string") throw new BuildError("package.json has no version");
  return pkg.version;
}

export interface BuildResult {
  outDir: string;
  nodeVersion: string;
  millis: number;
}

export async function buildRuntime(): Promise<BuildResult> {
  const started = Date.now();
  requireFile(TINI_STATIC, "install Debian's tini package (scripts/setup.sh)");
  requireFile(ptyAddon, "node-pty's native addon is not built (run scripts/setup.sh)");
  run("patchelf", ["--version"]);
  const nodeBinary = fs.realpathSync(process.execPath);
  const nodeVersion = process.version;

  fs.mkdirSync(outDir, { recursive: true });
  buildNodeAndLibs(nodeBinary);
  buildNodePty();
  try {
    checkPatchedNode(nodeVersion);
  } catch {
    // A stamp says bin/ and lib/ are current but they fail the check (edited or partly deleted): redo them.
    fs.rmSync(path.join(stampDir, "node"), { force: true });
    buildNodeAndLibs(nodeBinary);
    checkPatchedNode(nodeVersion);
  }
  copyAtomic(TINI_STATIC, path.join(outDir, "bin", "tini"), 0o755);
  buildToolkit();
  await buildAgent();
  writeAtomic(path.join(outDir, "package.json"), `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);
  const contract = {
    bundleVersion: readPackageVersion(),
    nodeVersion,
    protocolVersion: PROTOCOL_VERSION,
    builtAt: new Date().toISOString(),
    agentSha256: createHash("sha256").update(fs.readFileSync(path.join(outDir, "agent.js"))).digest("hex"),
  };
  writeAtomic(path.join(outDir, "workspace-contract.json"), `${JSON.stringify(contract, null, 2)}\n`);
  return { outDir, nodeVersion, millis: Date.now() - started };
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildRuntime().then(
    (r) => process.stdout.write(`runtime bundle (node ${r.nodeVersion}) built in ${r.millis} ms: ${path.relative(process.cwd(), r.outDir) || "."}\n`),
    (err: unknown) => {
      if (err instanceof BuildError) process.stderr.write(`build-runtime: ${err.message}\n`);
      else process.stderr.write(`build-runtime: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
