#!/usr/bin/env bash
# Edge agent footprint: stripped release binary size, and resident memory of a
# single-device agent publishing to a real Mosquitto (project config) for a while.
# Limits from the edge-agent issue: binary <= 8 MiB, RSS <= 10 MiB.
#
#   bench/edge-footprint.sh [seconds]      (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"

cargo build --release --locked -p edge-agent >/dev/null
work="$(mktemp -d /tmp/sccr-edge-footprint.XXXXXX)"
chmod 0777 "$work"
cleanup() { [ -n "${agent:-}" ] && kill "$agent" 2>/dev/null; [ -n "${broker:-}" ] && kill "$broker" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cp target/release/edge-agent "$work/edge-agent"
strip "$work/edge-agent"
size=$(stat -c %s "$work/edge-agent")

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
{ cat deploy/mosquitto/sccr.conf; echo "persistence false"; echo "listener $port 127.0.0.1"; } > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
broker=$!
cat > "$work/agent.toml" <<TOML
[agent]
id = "footprint-cabinet"
[mqtt]
port = $port
[buffer]
dir = "$work/buffer"
[[devices]]
id = "loop-footprint"
driver = "traffic_loop"
segment = "viale-strozzi"
interval = "1s"
TOML
"$work/edge-agent" run --config "$work/agent.toml" --stats-file "$work/stats.json" >"$work/agent.log" 2>&1 &
agent=$!
sleep "$secs"
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")
acked=$(python3 -c "import json;print(json.load(open('$work/stats.json'))['acked'])")

printf '| figure | measured | limit |\n|---|---|---|\n'
mib() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.2f", v / d }'; }
printf '| stripped release binary | %s MiB | 8 MiB |\n' "$(mib "$size" 1048576)"
printf '| RSS, one traffic loop, after %ss | %s MiB | 10 MiB |\n' "$secs" "$(mib "$rss_kib" 1024)"
printf '| peak RSS (VmHWM) | %s MiB | 10 MiB |\n' "$(mib "$hwm_kib" 1024)"
printf '| messages acknowledged by the broker | %s | |\n' "$acked"
