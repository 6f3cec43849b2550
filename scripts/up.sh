#!/usr/bin/env bash
# `npm run up`: installs what is missing, builds the runtime bundle, makes sure
# containerd runs and the default workspace image exists, then runs the
# orchestrator's workspace manager (embedded PGlite unless DATABASE_URL is set).
# It reconciles the workspaces recorded in the database and keeps them running;
# the HTTP API will be served by this same process once it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
npx tsx scripts/build-runtime.ts

export MEMOH_DATA_ROOT="${MEMOH_DATA_ROOT:-/var/lib/memoh}"
mkdir -p "$MEMOH_DATA_ROOT"
npx tsx scripts/prepare-host.ts
echo "memoh-workspace: workspace manager running (data root $MEMOH_DATA_ROOT); Ctrl-C stops it, workspaces keep running" >&2
exec node --import tsx host/workspace/main.ts
