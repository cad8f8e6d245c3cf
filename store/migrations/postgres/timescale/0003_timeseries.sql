-- TimescaleDB path: applied after the common migrations, in one transaction, only on a
-- database where `CREATE EXTENSION timescaledb` succeeded (detect with
-- `SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'`).
--
-- Placeholders substituted by the store from the application config, each a quoted
-- PostgreSQL interval literal such as '90 days':
--   {raw_retention}     how long raw readings are kept
--   {compress_after}    age after which readings and rollup_1m are compressed
-- Assumed: compress_after < raw_retention < the retention of rollup_1m (checked by the
-- store before it substitutes them).
--
-- Verified against TimescaleDB 2.23 (tests/pglite) with '7 days' / '30 days' /
-- '365 days'. Everything here is transaction-safe: the continuous aggregates are created
-- WITH NO DATA (WITH DATA, and `CALL refresh_continuous_aggregate`, refuse to run inside
-- a transaction block); policies fill them.

-- One chunk per day: a day of a city's readings fits comfortably in memory (recent
-- chunk indexes stay hot for the writer's dedupe lookups), and retention drops whole
-- chunks, so day-sized chunks make retention exact to the day.
SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'), migrate_data => true);
-- The rollup merger finds the readings of a batch by it (migration 2).
CREATE INDEX readings_batch ON readings (batch);

-- rollup_1m stays written by the application (merged partials, ON CONFLICT DO UPDATE),
-- exactly as on plain PostgreSQL. It becomes a hypertable only so that rollup_1h can be
-- a continuous aggregate over it (a cagg needs a hypertable source). It is ~60x smaller
-- than readings, hence week-sized chunks.
SELECT create_hypertable('rollup_1m', by_range('bucket', INTERVAL '7 days'), migrate_data => true);

-- Hierarchical continuous aggregates: 1h over rollup_1m, 1d over 1h. Column names match
-- rollup_1m so one history query serves every backend and every resolution. The
-- UPDATEs the writer makes to rollup_1m are logged as invalidations and re-aggregated
-- by the next refresh. materialized_only = false (real-time aggregation): a query also
-- aggregates the source rows above the materialization watermark, so the current hour
-- and day are included before any refresh. Caveat: a late change BELOW the watermark
-- shows only after the next refresh of that range.
CREATE MATERIALIZED VIEW rollup_1h
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, device, metric,
       sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
       last(last_value, last_time) AS last_value, max(last_time) AS last_time
FROM rollup_1m
GROUP BY 1, device, metric
WITH NO DATA;

CREATE MATERIALIZED VIEW rollup_1d
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 day', bucket) AS bucket, device, metric,
       sum(count)::bigint AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
       last(last_value, last_time) AS last_value, max(last_time) AS last_time
FROM rollup_1h
GROUP BY 1, device, metric
WITH NO DATA;

-- Retention drops only whole chunks, and a cagg's chunks default to 10x its source's
-- (70 days for both here): keep them smaller so the rollup retention is honoured closely.
SELECT set_chunk_time_interval('rollup_1h', INTERVAL '30 days');
SELECT set_chunk_time_interval('rollup_1d', INTERVAL '90 days');

-- Refresh windows reach back over the whole raw retention: a late reading accepted
-- today may change any minute still in readings, and a refresh only re-aggregates the
-- invalidated ranges inside its window, so a wide window costs nothing when nothing
-- changed. They must stay younger than rollup_1m's retention: refreshing a range whose
-- source chunks were dropped would erase its aggregates. end_offset keeps the still
-- open bucket out of the materialization (real-time aggregation covers it).
-- History bulk-loaded older than these windows never reaches the aggregates by itself:
-- `CALL refresh_continuous_aggregate('rollup_1h', from, to)`, then the same for
-- rollup_1d (outside a transaction block).
SELECT add_continuous_aggregate_policy('rollup_1h',
    start_offset => INTERVAL {raw_retention} + INTERVAL '1 hour',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes');
SELECT add_continuous_aggregate_policy('rollup_1d',
    start_offset => INTERVAL {raw_retention} + INTERVAL '2 days',
    end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour');

-- Columnstore compression past {compress_after}, for readings and rollup_1m (the
-- latter is kept for the rollup retention, so it ends up the larger of the two).
-- segmentby device, metric: every history query filters on them; orderby time: ranges
-- within a segment. The `timescaledb.compress` / add_compression_policy spelling is
-- used on purpose: every TimescaleDB 2.x accepts it (2.18+ maps it to the columnstore).
-- The writer needs no change: late readings may land in compressed chunks, where
-- INSERT ... ON CONFLICT DO NOTHING (readings) and ON CONFLICT DO UPDATE (rollup_1m)
-- both work and stay exact; the next policy run recompresses those chunks.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device, metric',
    timescaledb.compress_orderby = 'time'
);
SELECT add_compression_policy('readings', compress_after => INTERVAL {compress_after});
ALTER TABLE rollup_1m SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device, metric',
    timescaledb.compress_orderby = 'bucket'
);
SELECT add_compression_policy('rollup_1m', compress_after => INTERVAL {compress_after});

-- Retention policies (drop whole chunks older than the configured age of each level)
-- are applied by the store at every start from its configuration, so that changing the
-- configuration changes them. rollup_1h and rollup_1d are views here: nothing but those
-- policies may delete from them.
