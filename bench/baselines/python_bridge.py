"""The naive bridge a city IT team might write instead of SCCR: a paho-mqtt subscriber
that batches readings and COPYs them into PostgreSQL with psycopg. No validation, no
dedupe, no rollups, no live push; acks are paho's automatic ones (on receipt, not on
commit), so it can lose data on a crash. It is here only to be measured beside SCCR.

    python3 python_bridge.py --port 1883 --db postgres://... --seconds 30
"""

import argparse
import datetime
import json
import time

import paho.mqtt.client as mqtt
import psycopg

BATCH = 5000
MAX_AGE_S = 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--db", required=True)
    ap.add_argument("--seconds", type=float, default=30)
    args = ap.parse_args()

    conn = psycopg.connect(args.db, autocommit=False)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS readings_baseline (time timestamptz, device text, metric text, value double precision)"
    )
    conn.commit()
    rows = []
    last_flush = time.monotonic()

    def flush():
        nonlocal rows, last_flush
        if rows:
            with conn.cursor() as cur:
                with cur.copy("COPY readings_baseline (time, device, metric, value) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
            conn.commit()
        rows = []
        last_flush = time.monotonic()

    def on_message(client, userdata, msg):
        device = msg.topic.split("/")[3]
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        ts = body.get("ts")
        for r in body.get("readings", []):
            t = r.get("t", ts)
            if not isinstance(t, int):
                continue
            when = datetime.datetime.fromtimestamp(t / 1000, tz=datetime.timezone.utc)
            rows.append((when, device, r["m"], float(r["v"])))
        if len(rows) >= BATCH or time.monotonic() - last_flush > MAX_AGE_S:
            flush()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe("sccr/v1/devices/+/telemetry", qos=1)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="python-bridge", clean_session=False)
    client.max_inflight_messages_set(1000)
    client.on_message = on_message
    client.on_connect = on_connect
    client.connect(args.host, args.port)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        client.loop(timeout=0.1)
        if time.monotonic() - last_flush > MAX_AGE_S:
            flush()
    flush()
    client.disconnect()


if __name__ == "__main__":
    main()
