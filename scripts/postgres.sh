# Sourced by scripts/test.sh and scripts/bench.sh.
#
# sccr_ensure_postgres: export SCCR_TEST_PG_URL, the admin URL of a PostgreSQL for tests
# and benchmarks: the local server on 127.0.0.1:5432 when it is reachable (unless
# SCCR_TEST_THROWAWAY_PG is set), else a throwaway cluster started here with
# initdb/pg_ctl on a free port. sccr_stop_postgres removes the throwaway cluster.

sccr_pg_reachable() {
    command -v psql >/dev/null && psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
}

sccr_stop_postgres() { :; }

sccr_ensure_postgres() {
    if [ -n "${SCCR_TEST_PG_URL:-}" ]; then
        return
    fi
    local local_url="postgres://postgres@127.0.0.1:5432/postgres"
    if [ -z "${SCCR_TEST_THROWAWAY_PG:-}" ] && sccr_pg_reachable "$local_url"; then
        export SCCR_TEST_PG_URL="$local_url"
        return
    fi
    local bindir port
    bindir="$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -n1)")"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    SCCR_PG_DIR="$(mktemp -d /tmp/sccr-pg.XXXXXX)"
    SCCR_PG_RUN=()
    if [ "$(id -u)" = 0 ]; then
        # PostgreSQL refuses to run as root.
        chown postgres "$SCCR_PG_DIR"
        SCCR_PG_RUN=(runuser -u postgres --)
    fi
    SCCR_PG_BIN="$bindir"
    echo "starting a throwaway PostgreSQL on 127.0.0.1:$port ($SCCR_PG_DIR)"
    "${SCCR_PG_RUN[@]}" "$bindir/initdb" -D "$SCCR_PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
    "${SCCR_PG_RUN[@]}" "$bindir/pg_ctl" -D "$SCCR_PG_DIR/data" -l "$SCCR_PG_DIR/log" -w \
        -o "-p $port -k $SCCR_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    sccr_stop_postgres() {
        "${SCCR_PG_RUN[@]}" "$SCCR_PG_BIN/pg_ctl" -D "$SCCR_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$SCCR_PG_DIR"
    }
    export SCCR_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
