#!/usr/bin/env bash
# `npm run up`: installs what is missing, builds the runtime bundle and runs
# the bridge agent on this host. (The orchestrator replaces this once the HTTP
# API exists; see README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
npx tsx scripts/build-runtime.ts

data_root="${MEMOH_DATA_ROOT:-/var/lib/memoh}"
mkdir -p "$data_root/run/local" "$data_root/local-data"
chmod 0750 "$data_root/run/local"
export BRIDGE_SOCKET_PATH="$data_root/run/local/bridge.sock"
export BRIDGE_DATA_DIR="$data_root/local-data"
echo "memoh-workspace: bridge agent on unix:$BRIDGE_SOCKET_PATH (data dir $BRIDGE_DATA_DIR); Ctrl-C stops it" >&2
# bin/node of the bundle loads its libc from /opt/memoh/lib, which exists only in
# containers: on the host the host's node runs the same agent.js.
export MEMOH_RUNTIME_ROOT="$PWD/runtime-bundle/out"
exec node runtime-bundle/out/agent.js
