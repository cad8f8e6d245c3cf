# Sourced by scripts/test.sh and scripts/bench.sh.
#
# sccr_ensure_postgres: export SCCR_TEST_PG_URL, the admin URL of a PostgreSQL for tests
# and benchmarks: the local server on 127.0.0.1:5432 when it is reachable (unless
# SCCR_TEST_THROWAWAY_PG is set), else a throwaway cluster started here with
# initdb/pg_ctl on a free port, with the server options in SCCR_PG_SERVER_OPTS (`-c k=v`
# ...). sccr_stop_postgres stops it and removes the throwaway cluster. With
# SCCR_PG_KEEP_DIR set, the cluster lives in that directory and is kept between runs
# (made once; its databases, such as the benchmark's history dataset, stay).

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
    if [ -n "${SCCR_PG_KEEP_DIR:-}" ]; then
        mkdir -p "$SCCR_PG_KEEP_DIR"
        SCCR_PG_DIR="$(cd "$SCCR_PG_KEEP_DIR" && pwd)"
    else
        SCCR_PG_DIR="$(mktemp -d /tmp/sccr-pg.XXXXXX)"
    fi
    SCCR_PG_RUN=()
    if [ "$(id -u)" = 0 ]; then
        # PostgreSQL refuses to run as root.
        chown postgres "$SCCR_PG_DIR"
        SCCR_PG_RUN=(runuser -u postgres --)
    fi
    SCCR_PG_BIN="$bindir"
    echo "starting a ${SCCR_PG_KEEP_DIR:+kept }PostgreSQL on 127.0.0.1:$port ($SCCR_PG_DIR)" >&2
    if [ ! -f "$SCCR_PG_DIR/data/PG_VERSION" ]; then
        "${SCCR_PG_RUN[@]}" "$bindir/initdb" -D "$SCCR_PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
    fi
    # A kept cluster may still run after a run that was killed.
    "${SCCR_PG_RUN[@]}" "$bindir/pg_ctl" -D "$SCCR_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    "${SCCR_PG_RUN[@]}" "$bindir/pg_ctl" -D "$SCCR_PG_DIR/data" -l "$SCCR_PG_DIR/log" -w \
        -o "-p $port -k $SCCR_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=200 ${SCCR_PG_SERVER_OPTS:-}" start >/dev/null
    sccr_stop_postgres() {
        if [ -n "${SCCR_PG_KEEP_DIR:-}" ]; then
            "${SCCR_PG_RUN[@]}" "$SCCR_PG_BIN/pg_ctl" -D "$SCCR_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
        else
            "${SCCR_PG_RUN[@]}" "$SCCR_PG_BIN/pg_ctl" -D "$SCCR_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
            rm -rf "$SCCR_PG_DIR"
        fi
    }
    export SCCR_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
