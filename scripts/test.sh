#!/usr/bin/env bash
# Run the whole SCCR test suite.
#
# Builds the binaries the integration tests spawn, makes sure a PostgreSQL is reachable
# (the local server on 127.0.0.1:5432, or a throwaway cluster started here and removed at
# exit; see scripts/postgres.sh), then runs every test with cargo-nextest (or cargo test
# where nextest is absent). Mosquitto must be installed; tests start their own brokers on
# free ports with deploy/mosquitto/sccr.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres.sh

cargo build --workspace --bins --locked
trap 'sccr_stop_postgres' EXIT
sccr_ensure_postgres
echo "PostgreSQL for tests: $SCCR_TEST_PG_URL"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked "$@"
else
    cargo test --workspace --locked "$@"
fi
