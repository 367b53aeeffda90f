#!/usr/bin/env bash
# A PostgreSQL 15 server (Debian's postgresql-15) on 127.0.0.1, for the
# PostgreSQL sink's development, tests, demo and benchmark. Its data, logs
# and address live under target/postgres/.
#
#   postgres/pg.sh up       install if needed (apt), initdb, start, wait until it answers
#   postgres/pg.sh down     stop it (and keep its data)
#   postgres/pg.sh reset    stop it and remove its data
#   postgres/pg.sh restart  stop and start it again on the same port, keeping its data
#
# With PG_DIR=<dir>, a second server lives in <dir> instead (a test that
# stops its server starts one of its own this way).
#
# `up` prints the connection URL and writes it to target/postgres/url
# (postgres://tidewater@127.0.0.1:PORT/tidewater: the user tidewater needs
# no password, on 127.0.0.1 only; any other role signs in with its password,
# scram-sha-256, so a wrong password is refused as in production). The port is a free one chosen at the first `up` and kept.
# The server runs as the user `postgres` when this runs as root (initdb
# refuses root), else as the calling user.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dir="${PG_DIR:-$root/target/postgres}"
bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
data="$dir/data"
mkdir -p "$dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

install() {
  if [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "postgres: PostgreSQL 15 is needed: apt-get install postgresql-15" >&2
      exit 1
    fi
    echo "postgres: installing postgresql-15 with apt" >&2
    # No cluster of Debian's own: this script makes its servers itself.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/tidewater.conf
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 postgresql-client-15 >&2
  fi
}

# Runs "$@" as the server's user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() {
  [ -f "$data/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

configure() {
  if [ ! -f "$dir/port" ]; then
    free_port > "$dir/port"
  fi
  port="$(cat "$dir/port")"
  echo "postgres://tidewater@127.0.0.1:$port/tidewater" > "$dir/url"
}

init() {
  if [ -f "$data/PG_VERSION" ]; then
    return 0
  fi
  mkdir -p "$data" "$dir/run"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir" "$data" "$dir/run"
  fi
  as_owner "$bin/initdb" -D "$data" -U tidewater --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    echo "postgres: initdb failed; see $dir/initdb.log" >&2
    tail -20 "$dir/initdb.log" >&2
    exit 1
  }
  cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/run'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
CONF
}

# Who may sign in: tidewater without a password, every other role with its
# password (scram-sha-256); on 127.0.0.1 and the server's own socket only.
authenticate() {
  cat > "$data/pg_hba.conf" <<HBA
local all all trust
host all tidewater 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
HBA
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$data/pg_hba.conf"
  fi
}

up() {
  install
  configure
  if running; then
    if ! grep -qx "host all all 127.0.0.1/32 scram-sha-256" "$data/pg_hba.conf"; then
      authenticate
      as_owner "$bin/pg_ctl" -D "$data" reload >/dev/null
    fi
    cat "$dir/url"
    return 0
  fi
  init
  authenticate
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir/run"
  fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >/dev/null || {
    echo "postgres: the server did not start; see $dir/server.log" >&2
    tail -20 "$dir/server.log" >&2
    exit 1
  }
  if ! psql -h 127.0.0.1 -p "$port" -U tidewater -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'tidewater'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$port" -U tidewater -d postgres -qc "CREATE DATABASE tidewater" >/dev/null
  fi
  cat "$dir/url"
}

down() {
  if running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  reset) down; rm -rf "$data" "$dir/port" "$dir/url" "$dir/run" ;;
  restart) down; up ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
