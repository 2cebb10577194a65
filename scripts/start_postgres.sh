#!/usr/bin/env bash
# Start a local PostgreSQL for steplake's tests and benchmarks; print its URL on the last line.
#
#   export STEPLAKE_TEST_PG_URL=$(bash scripts/start_postgres.sh | tail -1)
#   bash scripts/start_postgres.sh stop      # stop the server of STEPLAKE_PG_DATA (if it runs)
#
# Idempotent: an already running server (on STEPLAKE_PG_PORT) is reused. The line before the URL says
# which: "started <data dir>" (this call started it: whoever called may stop it) or "reused <host:port>"
# (never stop that one: someone else started it). Uses Debian's postgresql
# binaries (/usr/lib/postgresql/<ver>/bin), a data directory of its own (STEPLAKE_PG_DATA, default
# /tmp/steplake-pg) owned by the postgres user when run as root, listens on 127.0.0.1 only, trusts local
# TCP connections (test server: never expose it), creates the database (STEPLAKE_PG_DB, default
# steplake_test). By default fsync is off (STEPLAKE_PG_FAST=1: each test creates a schema, ~5x faster; a
# killed steplake server still loses nothing, only a crash of the whole machine would); STEPLAKE_PG_FAST=0
# turns it back on (benchmarks of durable ingest).
set -euo pipefail

PORT="${STEPLAKE_PG_PORT:-5432}"
DATA="${STEPLAKE_PG_DATA:-/tmp/steplake-pg}"
DB="${STEPLAKE_PG_DB:-steplake_test}"
FAST="${STEPLAKE_PG_FAST:-1}"
URL="postgresql://postgres:postgres@127.0.0.1:${PORT}/${DB}"

BIN="${STEPLAKE_PG_BIN:-}"
if [[ -z "$BIN" ]]; then
  BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
fi
if [[ -z "$BIN" || ! -x "$BIN/initdb" ]]; then
  echo "start_postgres.sh: PostgreSQL binaries not found (apt-get install -y postgresql)" >&2
  exit 1
fi

as_pg() {  # run a command as the postgres user when we are root (initdb refuses root)
  if [[ "$(id -u)" == "0" ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres >/dev/null 2>&1; }

if [[ "${1:-}" == "stop" ]]; then
  if [[ -s "$DATA/postmaster.pid" ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >&2
    echo "start_postgres.sh: stopped the server of $DATA" >&2
  else
    echo "start_postgres.sh: no server runs from $DATA" >&2
  fi
  exit 0
fi

STARTED=0
if ! ready; then
  if [[ ! -s "$DATA/PG_VERSION" ]]; then
    mkdir -p "$DATA"
    [[ "$(id -u)" == "0" ]] && chown postgres: "$DATA"
    chmod 700 "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=trust -E UTF8 --locale=C.UTF-8 >&2 \
      || as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=trust -E UTF8 --no-locale >&2
    {
      echo "listen_addresses = '127.0.0.1'"
      echo "port = ${PORT}"
      echo "unix_socket_directories = '${DATA}'"
      echo "max_connections = 300"
      echo "shared_buffers = 128MB"
    } >> "$DATA/postgresql.conf"
  fi
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start >&2 || {
    echo "start_postgres.sh: server did not start; log follows" >&2
    tail -50 "$DATA/server.log" >&2 || true
    exit 1
  }
  STARTED=1
fi

for _ in $(seq 1 120); do
  ready && break
  sleep 0.5
done
ready || { echo "start_postgres.sh: server not accepting connections on 127.0.0.1:${PORT}" >&2; exit 1; }

PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if ! PGPASSWORD=postgres "${PSQL[@]}" -c "SELECT 1" >/dev/null 2>&1; then
  # a server we did not create answers on this port (e.g. Debian's own cluster, started by apt):
  # set the postgres password through its local socket (peer authentication as the postgres user)
  if [[ "$(id -u)" == "0" ]]; then
    runuser -u postgres -- "$BIN/psql" -p "$PORT" -d postgres -qtA \
      -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1 || true
  fi
  PGPASSWORD=postgres "${PSQL[@]}" -c "SELECT 1" >/dev/null || {
    echo "start_postgres.sh: cannot log in as postgres on 127.0.0.1:${PORT}; set STEPLAKE_PG_PORT to a free port" >&2
    exit 1
  }
fi
PGPASSWORD=postgres "${PSQL[@]}" -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
if [[ "$FAST" == "1" ]]; then SYNC=off; else SYNC=on; fi
PGPASSWORD=postgres "${PSQL[@]}" -c "ALTER SYSTEM SET fsync = ${SYNC}" -c "ALTER SYSTEM SET synchronous_commit = ${SYNC}" \
  -c "ALTER SYSTEM SET full_page_writes = ${SYNC}" -c "SELECT pg_reload_conf()" >/dev/null
if [[ "$(PGPASSWORD=postgres "${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '${DB}'")" != "1" ]]; then
  PGPASSWORD=postgres "${PSQL[@]}" -c "CREATE DATABASE \"${DB}\"" >/dev/null
fi
if [[ "$STARTED" == "1" ]]; then echo "started $DATA"; else echo "reused 127.0.0.1:${PORT}"; fi
echo "$URL"
