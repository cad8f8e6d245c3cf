#!/usr/bin/env bash
# Run the SCCR benchmarks: `scripts/bench.sh` (full, under 10 minutes, results in
# bench/results/) or `scripts/bench.sh --quick` (about a minute, results in
# target/bench-results/). Needs Mosquitto; PostgreSQL as for the tests (scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres.sh

cargo build --release --locked --workspace --bins
trap 'sccr_stop_postgres' EXIT
# The database's work per reading is read from pg_stat_statements, which must be loaded at
# the server's start: unless SCCR_TEST_PG_URL names a server, the benchmark runs its own,
# kept in target/bench-pg so that the history dataset is built once.
if [ -z "${SCCR_TEST_PG_URL:-}" ]; then
    export SCCR_TEST_THROWAWAY_PG=1 SCCR_PG_KEEP_DIR="${SCCR_PG_KEEP_DIR:-target/bench-pg}"
    export SCCR_PG_SERVER_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c track_io_timing=on -c track_wal_io_timing=on"
fi
sccr_ensure_postgres
# 10,000 websocket clients need as many descriptors in this process and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
target/release/sccr-bench "$@"
