#!/usr/bin/env bash
# Makes sure the PostgreSQL of the integration tests answers on 127.0.0.1:<port> and holds
# their database. Idempotent and quiet: prints only what it changes.
#
#   scripts/setup-postgres.sh [port]      (default $TEST_PG_PORT, else 5432)
#
# Installs Debian's postgresql-client (psql, pg_isready) when missing. Nothing answers on the
# port (pg_isready): installs Debian's `postgresql` when missing, starts the
# cluster configured for that port (creating one with pg_createcluster when there is none:
# `main` if that name is free, else `port<port>`), without systemd, after making TCP
# connections from 127.0.0.1 trusted in that cluster's pg_hba.conf (a line put before the
# other host lines). Something answers: it is left alone (no restart, no config change).
# Either way the role the tests connect as ($TEST_PG_USER, default postgres) and the
# database ($TEST_PG_DATABASE, default test) are created when missing and reachable.
set -euo pipefail

port="${1:-${TEST_PG_PORT:-5432}}"
database="${TEST_PG_DATABASE:-test}"
user="${TEST_PG_USER:-postgres}"

say() { echo "setup-postgres: $*"; }
warn() { echo "setup-postgres: warning: $*" >&2; }
die() { echo "setup-postgres: $*" >&2; exit 1; }

[[ "$port" =~ ^[0-9]{1,5}$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "invalid port ${port@Q}: expected 1-65535"
# Spliced into SQL as quoted identifiers: only plain names.
[[ "$database" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "invalid database name ${database@Q}: use [a-z_][a-z0-9_]*"
[[ "$user" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "invalid role name ${user@Q}: use [a-z_][a-z0-9_]*"

# Runs a command, showing its output only when it fails.
quietly() {
  local out
  if ! out="$("$@" 2>&1)"; then
    [ -n "$out" ] && echo "$out" >&2
    return 1
  fi
}

# 0: accepting connections; 1: answering but not accepting yet (starting, shutting down);
# 2: nothing answers.
probe() {
  local rc=0
  pg_isready -q -h 127.0.0.1 -p "$port" -t 3 || rc=$?
  case "$rc" in 0) return 0 ;; 1) return 1 ;; *) return 2 ;; esac
}

apt_updated=no
apt_install() {
  [ "$(id -u)" = 0 ] || die "$1 is needed; run as root to install it"
  say "installing Debian's $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = no ]; then
    quietly apt-get update -qq || die "apt-get update failed"
    apt_updated=yes
  fi
  quietly apt-get install -y -qq --no-install-recommends "$@" || die "apt-get install $* failed"
}

wait_until_accepting() {
  local deadline=$((SECONDS + 60)) state
  while :; do
    state=0
    probe || state=$?
    [ "$state" = 0 ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.5
  done
}

newest_installed_version() {
  local v newest=""
  for v in $(ls -1 /usr/lib/postgresql 2>/dev/null | sort -V); do
    [ -x "/usr/lib/postgresql/$v/bin/postgres" ] && newest="$v"
  done
  echo "$newest"
}

install_postgresql() {
  if command -v pg_ctlcluster >/dev/null && command -v pg_createcluster >/dev/null && [ -n "$(newest_installed_version)" ]; then
    return 0
  fi
  apt_install postgresql
}

# Puts `host all all 127.0.0.1/32 trust` before the first host line of the cluster's
# pg_hba.conf (the first matching line wins), unless it is already the first one.
trust_loopback() {
  local ver="$1" name="$2"
  local hba="/etc/postgresql/$ver/$name/pg_hba.conf"
  [ -f "$hba" ] || die "$hba not found (cluster $ver/$name)"
  local host_re='^[[:space:]]*host(ssl|nossl|gssenc|nogssenc)?[[:space:]]'
  local first
  first="$(grep -E "$host_re" "$hba" | head -n1 | awk '{$1=$1; print}')"
  [ "$first" = "host all all 127.0.0.1/32 trust" ] && return 0
  say "trusting TCP connections from 127.0.0.1 in $hba"
  local tmp="$hba.memoh-tmp"
  awk -v re="$host_re" '
    function ours() { print "# memoh-workspace tests: trust TCP connections from this machine"; print "host all all 127.0.0.1/32 trust" }
    !done && $0 ~ re { ours(); done = 1 }
    { print }
    END { if (!done) ours() }
  ' "$hba" >"$tmp"
  chown --reference="$hba" "$tmp"
  chmod --reference="$hba" "$tmp"
  mv "$tmp" "$hba"
  # Called only for a stopped cluster: starting it reads the file, no reload needed.
}

start_local_cluster() {
  install_postgresql
  # Installing creates and may start Debian's main cluster: it may answer now.
  local state=0
  probe || state=$?
  [ "$state" != 2 ] && return 0

  local ver name
  read -r ver name < <(pg_lsclusters -h | awk -v p="$port" '$3 == p { print $1, $2; exit }') || true
  if [ -z "${name:-}" ]; then
    ver="$(newest_installed_version)"
    [ -n "$ver" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    name=main
    [ -e "/etc/postgresql/$ver/main" ] && name="port$port"
    say "creating PostgreSQL cluster $ver/$name on port $port"
    quietly pg_createcluster "$ver" "$name" --port "$port" || die "pg_createcluster $ver $name failed"
  fi
  if pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" status >/dev/null 2>&1; then
    die "cluster $ver/$name (port $port) runs but does not answer on 127.0.0.1:$port: check listen_addresses in /etc/postgresql/$ver/$name/postgresql.conf"
  fi
  trust_loopback "$ver" "$name"
  say "starting PostgreSQL cluster $ver/$name on port $port"
  quietly pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start \
    || die "cannot start cluster $ver/$name (see /var/log/postgresql/postgresql-$ver-$name.log)"
}

# psql as the tests connect: TCP to 127.0.0.1 as $user.
psql_tcp() {
  PGCONNECT_TIMEOUT=5 psql -X -q -w -v ON_ERROR_STOP=1 -tA -h 127.0.0.1 -p "$port" -U "$user" "$@"
}

# psql as the superuser: the tests' user over TCP when that works, else the postgres OS
# user over the local socket (peer authentication) for a local Debian cluster.
admin_psql() {
  if [ "$admin_via" = tcp ]; then
    psql_tcp -d postgres "$@"
  else
    (cd / && runuser -u postgres -- env PGCONNECT_TIMEOUT=5 psql -X -q -w -v ON_ERROR_STOP=1 -tA -h /var/run/postgresql -p "$port" -d postgres "$@")
  fi
}

ensure_role_and_database() {
  admin_via=tcp
  if ! psql_tcp -d postgres -c "SELECT 1" >/dev/null 2>&1; then
    admin_via=socket
    if [ "$(id -u)" != 0 ] || ! id postgres >/dev/null 2>&1 || [ ! -S "/var/run/postgresql/.s.PGSQL.$port" ] \
      || ! admin_psql -c "SELECT 1" >/dev/null 2>&1; then
      return 1
    fi
  fi
  if [ -z "$(admin_psql -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" ]; then
    say "creating role $user"
    admin_psql -c "CREATE ROLE \"$user\" LOGIN" >/dev/null || return 1
  fi
  if [ -z "$(admin_psql -c "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
    say "creating database $database"
    admin_psql -c "CREATE DATABASE \"$database\" OWNER \"$user\"" >/dev/null || return 1
  fi
  psql_tcp -d "$database" -c "SELECT 1" >/dev/null 2>&1
}

# psql and pg_isready (Debian's postgresql-client) probe and set up any server, ours or not.
if ! command -v psql >/dev/null || ! command -v pg_isready >/dev/null; then
  apt_install postgresql-client
fi

state=0
probe || state=$?
started_here=no
if [ "$state" = 2 ]; then
  start_local_cluster
  started_here=yes
fi
wait_until_accepting || die "PostgreSQL on 127.0.0.1:$port does not accept connections after 60 s"

if ! ensure_role_and_database; then
  msg="cannot reach database $database on 127.0.0.1:$port as $user (TCP, no password)"
  # A server started here is ours to make work; one that was already there is left alone.
  [ "$started_here" = yes ] && die "$msg"
  warn "$msg: the PostgreSQL tests will fail to connect (or set TEST_DATABASE_URL)"
fi
