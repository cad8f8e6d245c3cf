-- Foundation schema: devices, segments, raw readings with their dedupe key,
-- minute rollups, latest values, dead letters. Times are UTC timestamptz.

CREATE TABLE road_segments (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    kind            text NOT NULL DEFAULT '',
    coordinates     jsonb NOT NULL,
    length_m        double precision NOT NULL,
    lanes           integer NOT NULL,
    speed_limit_kmh double precision NOT NULL,
    free_flow_kmh   double precision NOT NULL,
    capacity_vph    double precision NOT NULL
);

CREATE TABLE devices (
    id            text PRIMARY KEY,
    kind          text,
    segment_id    text REFERENCES road_segments (id) ON DELETE SET NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- The dedupe key: a replayed reading (same device, metric, time) changes nothing.
CREATE TABLE readings (
    time   timestamptz NOT NULL,
    device text NOT NULL,
    metric text NOT NULL,
    value  double precision NOT NULL,
    seq    bigint,
    PRIMARY KEY (device, metric, time)
);

-- Partial aggregates merged by the writer from the rows it actually inserted.
CREATE TABLE rollup_1m (
    bucket     timestamptz NOT NULL,
    device     text NOT NULL,
    metric     text NOT NULL,
    count      bigint NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    last_value double precision NOT NULL,
    last_time  timestamptz NOT NULL,
    PRIMARY KEY (device, metric, bucket)
);

CREATE TABLE latest (
    device text NOT NULL,
    metric text NOT NULL,
    time   timestamptz NOT NULL,
    value  double precision NOT NULL,
    PRIMARY KEY (device, metric)
);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    device       text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL,
    payload_size integer NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_reason ON dead_letters (reason);
