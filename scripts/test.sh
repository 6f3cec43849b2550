#!/usr/bin/env bash
# `npm test`: installs what is missing, builds the runtime bundle, type-checks,
# then runs the unit tests (no daemons) and the integration tests (a private
# containerd, runc, CNI plugins, a local registry, PostgreSQL).
#   scripts/test.sh [all|unit|integration] [extra node --test args...]
set -euo pipefail
cd "$(dirname "$0")/.."

which="${1:-all}"
shift || true

bash scripts/setup.sh
npx tsc --noEmit -p .
npx tsx scripts/build-runtime.ts

case "$which" in
  unit) dirs=(test/unit) ;;
  integration) dirs=(test/integration) ;;
  all) dirs=(test/unit test/integration) ;;
  *) echo "usage: scripts/test.sh [all|unit|integration]" >&2; exit 2 ;;
esac

mapfile -t files < <(find "${dirs[@]}" -name '*.test.ts' -not -path '*/node_modules/*' | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "no test files found in ${dirs[*]}" >&2
  exit 1
fi
exec node --import tsx --test --test-reporter=spec "$@" "${files[@]}"
