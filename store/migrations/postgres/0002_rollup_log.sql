-- The rollup log: per-minute partials of the readings each batch really inserted, written
-- in the batch's own transaction (so a committed reading is always accounted for exactly
-- once) and folded into the rollup tables and `latest` by the rollup merger, which deletes
-- the rows it merged in the same transaction. Merging many batches at once turns one
-- upsert per reading into one per (device, metric, bucket).
CREATE TABLE rollup_pending (
    bucket     timestamptz NOT NULL,
    device     text NOT NULL,
    metric     text NOT NULL,
    count      bigint NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    last_value double precision NOT NULL,
    last_time  timestamptz NOT NULL
);

-- How this database stores time series: 'native' or 'timescaledb'.
CREATE TABLE sccr_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
