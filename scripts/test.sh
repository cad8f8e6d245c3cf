#!/usr/bin/env bash
# Run the whole SCCR test suite.
#
# Builds the binaries the integration tests spawn, makes sure a PostgreSQL is reachable
# (the local server on 127.0.0.1:5432, or a throwaway cluster started here and removed at
# exit; see scripts/postgres.sh), then runs every test with cargo-nextest (or cargo test
# where nextest is absent). Mosquitto must be installed; tests start their own brokers on
# free ports with deploy/mosquitto/sccr.conf. Where node and npm are present, a TimescaleDB
# (PGlite build, scripts/timescaledb.sh) is started for the store's TimescaleDB tests;
# elsewhere those tests say loudly that they were skipped (and fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/postgres.sh
. scripts/timescaledb.sh

cargo build --workspace --bins --locked
trap 'sccr_stop_postgres; sccr_stop_timescaledb' EXIT
sccr_ensure_postgres
echo "PostgreSQL for tests: $SCCR_TEST_PG_URL"
sccr_start_timescaledb
echo "TimescaleDB for tests: ${SCCR_TEST_TIMESCALEDB_URL:-none (skipped)}"
# The dashboard's browser tests (tests/tests/browser.rs) run Playwright from tests/browser
# with the system's chromium; its npm packages are installed here (never a browser build).
if command -v npm >/dev/null && command -v chromium >/dev/null; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked "$@"
else
    cargo test --workspace --locked "$@"
fi
