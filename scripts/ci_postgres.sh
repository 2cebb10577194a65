# Sourced by .ci/run (bash): start the tests' PostgreSQL with scripts/start_postgres.sh, export
# STEPLAKE_TEST_PG_URL, and stop the server when the calling shell exits, but only if this run started it:
# a server that was already running (another checkout's, Debian's) is left alone, and STEPLAKE_KEEP_PG=1
# leaves ours running too (e.g. to rerun single tests against it).
#
#   . scripts/ci_postgres.sh && steplake_pg_up
steplake_pg_up() {
  local out first
  out=$(bash scripts/start_postgres.sh) || return 1
  STEPLAKE_TEST_PG_URL=$(tail -n 1 <<<"$out")
  export STEPLAKE_TEST_PG_URL
  first=$(tail -n 2 <<<"$out" | head -n 1)
  if [[ "$first" == started\ * && "${STEPLAKE_KEEP_PG:-0}" != "1" ]]; then
    STEPLAKE_PG_STARTED_DATA=${first#started }
    # shellcheck disable=SC2064  # expand now: stop exactly the server this run started
    trap "STEPLAKE_PG_DATA='${STEPLAKE_PG_STARTED_DATA}' bash '$PWD/scripts/start_postgres.sh' stop" EXIT
  fi
}
