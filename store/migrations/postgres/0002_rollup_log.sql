-- Readings carry the id of the batch that inserted them, and `rollup_pending` lists the
-- committed batches whose readings are not yet in the rollups. Both are written in the
-- batch's own transaction, so every committed reading is accounted for exactly once: the
-- rollup merger deletes a set of batches from `rollup_pending` and merges the readings
-- of those batches (found through `readings_batch`) into rollup_1m/1h/1d and `latest` in
-- one transaction. A replayed reading is not inserted, so it carries no batch and is
-- never counted again. Merging many batches at once turns one upsert per reading into
-- one per (device, metric, bucket).
CREATE SEQUENCE readings_batch_seq;

CREATE TABLE rollup_pending (
    batch    bigint PRIMARY KEY,
    -- Time range of the batch's readings: lets the merger skip other partitions/chunks.
    min_time timestamptz NOT NULL,
    max_time timestamptz NOT NULL
);

-- Readings stored before batches existed are already in the rollups.
ALTER TABLE readings ADD COLUMN batch bigint;

-- How this database stores time series: 'native' or 'timescaledb'.
CREATE TABLE sccr_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
