-- Foundation schema for the embedded store. Times are Unix milliseconds (UTC).

CREATE TABLE road_segments (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT '',
    coordinates     TEXT NOT NULL,
    length_m        REAL NOT NULL,
    lanes           INTEGER NOT NULL,
    speed_limit_kmh REAL NOT NULL,
    free_flow_kmh   REAL NOT NULL,
    capacity_vph    REAL NOT NULL
);

CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    kind             TEXT,
    segment_id       TEXT REFERENCES road_segments (id) ON DELETE SET NULL,
    registered_at_ms INTEGER NOT NULL
);

CREATE TABLE readings (
    time_ms INTEGER NOT NULL,
    device  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    value   REAL NOT NULL,
    seq     INTEGER,
    PRIMARY KEY (device, metric, time_ms)
) WITHOUT ROWID;

CREATE TABLE rollup_1m (
    bucket_ms    INTEGER NOT NULL,
    device       TEXT NOT NULL,
    metric       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    sum          REAL NOT NULL,
    min          REAL NOT NULL,
    max          REAL NOT NULL,
    last_value   REAL NOT NULL,
    last_time_ms INTEGER NOT NULL,
    PRIMARY KEY (device, metric, bucket_ms)
) WITHOUT ROWID;

CREATE TABLE latest (
    device  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (device, metric)
) WITHOUT ROWID;

CREATE TABLE dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at_ms INTEGER NOT NULL,
    topic          TEXT NOT NULL,
    device         TEXT,
    reason         TEXT NOT NULL,
    detail         TEXT NOT NULL,
    payload        BLOB NOT NULL,
    payload_size   INTEGER NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at_ms DESC);
