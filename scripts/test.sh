#!/usr/bin/env bash
# `npm test`: installs what is missing, builds the runtime bundle, type-checks,
# then runs the unit tests (no daemons) and the integration tests (a private
# containerd, runc, CNI plugins, a local registry, PostgreSQL).
#   scripts/test.sh [all|unit|integration] [test files...] [node --test options...]
# The optional first word picks the half (default all). Arguments naming test files
# run just those files; everything else goes to `node --test` as it is, e.g.
#   npm test -- --test-name-pattern='pruneEvents'
#   npm run test:unit -- test/unit/config.test.ts
# PostgreSQL (127.0.0.1:5432, database test) is set up unless only unit tests run or
# TEST_DATABASE_URL points the tests at another server.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/test.sh [all|unit|integration] [test files...] [node --test options...]" >&2
  exit 2
}

which=all
case "${1:-}" in
  all | unit | integration)
    which="$1"
    shift
    ;;
esac

files=()
node_args=()
own_reporter=no
for arg in "$@"; do
  if [[ "$arg" == -* ]]; then
    [[ "$arg" == --test-reporter* ]] && own_reporter=yes
    node_args+=("$arg")
  elif [ -f "$arg" ]; then
    files+=("$arg")
  elif [[ "$arg" == *.ts || "$arg" == *.js || "$arg" == */* ]]; then
    echo "scripts/test.sh: no such test file: $arg" >&2
    usage
  else
    # The value of the option before it (`--test-name-pattern foo`).
    node_args+=("$arg")
  fi
done

if [ "${#files[@]}" -eq 0 ]; then
  case "$which" in
    unit) dirs=(test/unit) ;;
    integration) dirs=(test/integration) ;;
    all) dirs=(test/unit test/integration) ;;
  esac
  mapfile -t files < <(find "${dirs[@]}" -name '*.test.ts' -not -path '*/node_modules/*' | sort)
  if [ "${#files[@]}" -eq 0 ]; then
    echo "no test files found in ${dirs[*]}" >&2
    exit 1
  fi
fi

# Only tests outside test/unit/ talk to PostgreSQL.
needs_postgres=no
for f in "${files[@]}"; do
  [[ "$f" == test/unit/* || "$f" == ./test/unit/* ]] || needs_postgres=yes
done
if [ "$needs_postgres" = yes ] && [ -z "${TEST_DATABASE_URL:-}" ]; then
  bash scripts/setup.sh --postgres
else
  bash scripts/setup.sh
fi
npx tsc --noEmit -p .
npx tsx scripts/build-runtime.ts

[ "$own_reporter" = yes ] || node_args=(--test-reporter=spec "${node_args[@]}")
exec node --import tsx --test "${node_args[@]}" "${files[@]}"
