#!/usr/bin/env bash
# Run the whole SCCR test suite.
#
# Builds the binaries the integration tests spawn, makes sure a PostgreSQL is reachable
# (the local server on 127.0.0.1:5432, or a throwaway cluster started here with
# initdb/pg_ctl on a free port and removed at exit), then runs every test with
# cargo-nextest (or cargo test where nextest is absent). Mosquitto must be installed;
# tests start their own brokers on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --locked

pg_reachable() {
    command -v psql >/dev/null && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

cleanup() { :; }
trap 'cleanup' EXIT

if [ -z "${SCCR_TEST_PG_URL:-}" ]; then
    local_url="postgres://postgres@127.0.0.1:5432/postgres"
    if [ -z "${SCCR_TEST_THROWAWAY_PG:-}" ] && pg_reachable "$local_url"; then
        export SCCR_TEST_PG_URL="$local_url"
    else
        bindir="$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -n1)")"
        port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
        pgdir="$(mktemp -d /tmp/sccr-pg.XXXXXX)"
        run_pg=()
        if [ "$(id -u)" = 0 ]; then
            # PostgreSQL refuses to run as root.
            chown postgres "$pgdir"
            run_pg=(runuser -u postgres --)
        fi
        echo "starting a throwaway PostgreSQL on 127.0.0.1:$port ($pgdir)"
        "${run_pg[@]}" "$bindir/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync >/dev/null
        "${run_pg[@]}" "$bindir/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
            -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
        cleanup() {
            "${run_pg[@]}" "$bindir/pg_ctl" -D "$pgdir/data" -m immediate -w stop >/dev/null 2>&1 || true
            rm -rf "$pgdir"
        }
        export SCCR_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    fi
fi
echo "PostgreSQL for tests: $SCCR_TEST_PG_URL"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked "$@"
else
    cargo test --workspace --locked "$@"
fi
