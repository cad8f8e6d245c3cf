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
target/release/sccr-bench "$@"
