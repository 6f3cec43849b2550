#!/usr/bin/env bash
# `npm run up`: installs what is missing, builds the runtime bundle, makes sure
# containerd runs and the default workspace image exists, then serves the
# orchestrator: workspace manager, supervisor and the HTTP API (embedded PGlite
# unless DATABASE_URL is set). Ctrl-C stops it; the workspaces keep running.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
npx tsx scripts/build-runtime.ts

export MEMOH_DATA_ROOT="${MEMOH_DATA_ROOT:-/var/lib/memoh}"
mkdir -p "$MEMOH_DATA_ROOT"
npx tsx scripts/prepare-host.ts
exec node bin/memoh-workspace.mjs serve "$@"
