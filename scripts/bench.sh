#!/usr/bin/env bash
# Run the SCCR benchmarks: `scripts/bench.sh` (full, under 10 minutes, results in
# bench/results/) or `scripts/bench.sh --quick` (about a minute, results in
# target/bench-results/). Needs Mosquitto; PostgreSQL as for the tests (scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres.sh

cargo build --release --locked --workspace --bins
trap 'sccr_stop_postgres' EXIT
sccr_ensure_postgres
# 10,000 websocket clients need as many descriptors in this process and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
target/release/sccr-bench "$@"
