#!/usr/bin/env bash
# The broker fan-out cost of device affinity (docs/scale-out.md#fan-out-cost): the same
# load (DEVICES devices publishing MESSAGES QoS 1 messages each with mosquitto_pub) through
# one `sccr serve --role ingest` with `ingest.partitions = P`, against Mosquitto (project
# config) and PostgreSQL on 127.0.0.1:5432. Prints the CPU seconds of the broker and of
# sccr, and the wall time until every reading is stored.
#
#   bench/affinity-fanout.sh P [DEVICES] [MESSAGES]     (defaults 20, 2000)
#
# Uses target/debug/sccr (cargo build -p sccr first); sccr's CPU is that of a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
P="$1"; DEVICES="${2:-20}"; MSGS="${3:-2000}"
work="$(mktemp -d /tmp/sccr-affinity-fanout.XXXXXX)"
mkdir -p "$work/data"; chmod 0777 "$work" "$work/data"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port="$(free_port)"; api="$(free_port)"; db="affinity_fanout_$$"
cleanup() {
  [ -n "${sccr:-}" ] && kill "$sccr" 2>/dev/null && wait "$sccr" 2>/dev/null
  [ -n "${broker:-}" ] && kill "$broker" 2>/dev/null && wait "$broker" 2>/dev/null
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres || true
  rm -rf "$work"
}
trap cleanup EXIT
{ grep -v '^#' deploy/mosquitto/sccr.conf; echo "persistence_location $work/data/"; echo "listener $port 127.0.0.1"; } > "$work/m.conf"
mosquitto -c "$work/m.conf" >"$work/m.log" 2>&1 & broker=$!
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
printf '[ingest]\npartitions = %s\n[alerts]\nair_quality_defaults = false\n' "$P" > "$work/sccr.toml"
SCCR_MQTT__PORT=$port SCCR_DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" \
  SCCR_API__LISTEN="127.0.0.1:$api" SCCR_MQTT__CLIENT_ID="fanout-$P" RUST_LOG=warn \
  "$root/target/debug/sccr" serve --role ingest --config "$work/sccr.toml" >"$work/s.log" 2>&1 & sccr=$!
owned() { python3 -c "import json,sys;print(len(json.load(sys.stdin).get('partitions',[0])))"; }
for _ in $(seq 1 300); do
  if body="$(curl -sf "http://127.0.0.1:$api/readyz")" && [ "$(echo "$body" | owned)" = "$P" ]; then break; fi
  sleep 0.2
done
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
b0="$(cpu $broker)"; s0="$(cpu $sccr)"; t0="$(date +%s.%N)"; now="$(date +%s%3N)"
pubs=()
for d in $(seq 1 "$DEVICES"); do
  python3 -c "
for i in range($MSGS): print('{\"seq\":%d,\"ts\":%d,\"readings\":[{\"m\":\"speed_kmh\",\"v\":%d},{\"m\":\"vehicle_count\",\"v\":3}]}' % (i+1, $now-600000+i*100, 30+i%20))
" | mosquitto_pub -p "$port" -q 1 -i "pub-$d" -t "sccr/v1/devices/fanout-$d/telemetry" -l &
  pubs+=($!)
done
wait "${pubs[@]}"
want=$((DEVICES * MSGS * 2))
for _ in $(seq 1 1200); do
  n="$(psql -tA -h 127.0.0.1 -U postgres -c "SELECT count(*) FROM readings WHERE device LIKE 'fanout-%'" "$db")"
  [ "$n" -ge "$want" ] && break
  sleep 0.1
done
t1="$(date +%s.%N)"; b1="$(cpu $broker)"; s1="$(cpu $sccr)"; tck="$(getconf CLK_TCK)"
python3 -c "print('partitions=$P messages=$((DEVICES * MSGS)) stored=$n/$want wall=%.2fs broker_cpu=%.2fs sccr_cpu=%.2fs' % ($t1-$t0, ($b1-$b0)/$tck, ($s1-$s0)/$tck))"
curl -s "http://127.0.0.1:$api/metrics" | grep -E '^sccr_ingest_(messages|foreign_acked|acks)_total' || true
