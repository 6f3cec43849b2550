// Fake CNI plugins for the runner's pure logic: shell scripts in a temp dir that record
// their stdin and CNI_* environment per call and answer from files the test writes.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const SCRIPT = `#!/bin/sh
name=$(basename "$0")
d="$FAKE_CNI_DIR"
mkdir -p "$d/calls"
n=$(ls "$d/calls" | grep -c '\\.stdin$')
seq=$(printf %03d "$n")
cat > "$d/calls/$seq-$name-$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$d/calls/$seq-$name-$CNI_COMMAND.env"
echo $$ > "$d/calls/$seq-$name-$CNI_COMMAND.pid"
if [ -f "$d/$name.$CNI_COMMAND.sleep" ]; then sleep "$(cat "$d/$name.$CNI_COMMAND.sleep")"; fi
if [ -f "$d/$name.$CNI_COMMAND.out.$n" ]; then cat "$d/$name.$CNI_COMMAND.out.$n"
elif [ -f "$d/$name.$CNI_COMMAND.out" ]; then cat "$d/$name.$CNI_COMMAND.out"
elif [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'
fi
if [ -f "$d/$name.$CNI_COMMAND.stderr" ]; then cat "$d/$name.$CNI_COMMAND.stderr" >&2; fi
code=0
if [ -f "$d/$name.$CNI_COMMAND.code.$n" ]; then code=$(cat "$d/$name.$CNI_COMMAND.code.$n")
elif [ -f "$d/$name.$CNI_COMMAND.code" ]; then code=$(cat "$d/$name.$CNI_COMMAND.code"); fi
exit "$code"
`;

export interface FakeCall {
  plugin: string;
  command: string;
  stdin: Record<string, unknown>;
  env: Record<string, string>;
}

export interface FakeCni {
  /** Plugin dir holding the fakes. */
  binDir: string;
  /** Where calls are recorded and answers read. */
  dir: string;
  /** Env to give the runner (FAKE_CNI_DIR). */
  env: Record<string, string>;
  /** Sets what `plugin` prints for `command` (on every call, or only on call number `call`). */
  answer(plugin: string, command: string, out: unknown, options?: { code?: number; call?: number; stderr?: string }): void;
  /** Makes the plugin sleep before answering. */
  sleep(plugin: string, command: string, seconds: number): void;
  calls(): FakeCall[];
  remove(): void;
}

export function makeFakeCni(plugins: string[]): FakeCni {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "memoh-fake-cni-"));
  const binDir = path.join(root, "bin");
  const dir = path.join(root, "state");
  fs.mkdirSync(binDir);
  fs.mkdirSync(dir);
  for (const p of plugins) fs.writeFileSync(path.join(binDir, p), SCRIPT, { mode: 0o755 });
  return {
    binDir,
    dir,
    env: { FAKE_CNI_DIR: dir },
    answer(plugin, command, out, options = {}) {
      const suffix = options.call === undefined ? "" : `.${options.call}`;
      fs.writeFileSync(path.join(dir, `${plugin}.${command}.out${suffix}`), typeof out === "string" ? out : JSON.stringify(out));
      if (options.code !== undefined) fs.writeFileSync(path.join(dir, `${plugin}.${command}.code${suffix}`), String(options.code));
      if (options.stderr !== undefined) fs.writeFileSync(path.join(dir, `${plugin}.${command}.stderr`), options.stderr);
    },
    sleep(plugin, command, seconds) {
      fs.writeFileSync(path.join(dir, `${plugin}.${command}.sleep`), String(seconds));
    },
    calls() {
      const callsDir = path.join(dir, "calls");
      if (!fs.existsSync(callsDir)) return [];
      return fs
        .readdirSync(callsDir)
        .filter((f) => f.endsWith(".stdin"))
        .sort()
        .map((f) => {
          const base = f.slice(0, -".stdin".length);
          const [, plugin, command] = /^\d+-(.+)-([A-Z]+)$/.exec(base) ?? [];
          const text = fs.readFileSync(path.join(callsDir, f), "utf8");
          const envText = fs.existsSync(path.join(callsDir, `${base}.env`)) ? fs.readFileSync(path.join(callsDir, `${base}.env`), "utf8") : "";
          const env = Object.fromEntries(
            envText
              .split("\n")
              .filter(Boolean)
              .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
          );
          return { plugin: plugin ?? "", command: command ?? "", stdin: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>), env };
        });
    },
    remove() {
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A 1.0.0 result like the bridge plugin's: bridge, host veth, container eth0 with one IPv4. */
export function bridgeResult(ip: string, netns: string, hostVeth = "veth1234"): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    interfaces: [
      { name: "fakebr0", mac: "aa:aa:aa:aa:aa:01" },
      { name: hostVeth, mac: "aa:aa:aa:aa:aa:02" },
      { name: "eth0", mac: "aa:aa:aa:aa:aa:03", sandbox: netns },
    ],
    ips: [{ interface: 2, address: `${ip}/24`, gateway: "10.99.0.1" }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
}
