#!/usr/bin/env bash
# `npm run bench [-- group…]`: installs what is missing, builds the runtime bundle, runs the
# benchmarks (all groups, or the named ones: agent, workspace, api, tools, pull, containerd, data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsx scripts/build-runtime.ts
exec npx tsx scripts/bench/run.ts "$@"
