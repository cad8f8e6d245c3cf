-- Time-series layout for PostgreSQL without TimescaleDB.
--
-- `readings` becomes a table partitioned by day (UTC): the writer creates a day's
-- partition before it writes into it (sccr_ensure_readings_partition), maintenance creates
-- them a few days ahead and enforces retention by dropping whole partitions, which costs
-- no vacuum and no index bloat. Hourly and daily rollups are tables maintained by the
-- application: the rollup merger folds the readings of committed batches (migration 2)
-- into rollup_1m/1h/1d and `latest` (INSERT … ON CONFLICT DO UPDATE combining
-- count/sum/min/max and last by time).

ALTER TABLE readings RENAME TO readings_0001;
ALTER TABLE readings_0001 RENAME CONSTRAINT readings_pkey TO readings_0001_pkey;

CREATE TABLE readings (
    time   timestamptz NOT NULL,
    device text NOT NULL,
    metric text NOT NULL,
    value  double precision NOT NULL,
    seq    bigint,
    batch  bigint,
    PRIMARY KEY (device, metric, time)
) PARTITION BY RANGE (time);
-- The merger finds a batch's readings by it; batch ids only grow, so inserts append to
-- the right edge of each partition's index.
CREATE INDEX readings_batch ON readings (batch);

-- Creates the partition holding `day` (UTC) if it is missing. Serialised by an advisory
-- transaction lock so that writers of several processes may call it at once.
CREATE FUNCTION sccr_ensure_readings_partition(day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('readings_p%s', to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(1540227073);
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- The lock does not refresh this session's catalog cache, so the check above may miss
    -- a partition another session just created: that is not an error.
    BEGIN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            part,
            (day::timestamp AT TIME ZONE 'UTC'),
            ((day + 1)::timestamp AT TIME ZONE 'UTC'));
    EXCEPTION WHEN duplicate_table THEN
        RETURN false;
    END;
    RETURN true;
END
$$;

SELECT sccr_ensure_readings_partition(d::date)
FROM (SELECT DISTINCT (time AT TIME ZONE 'UTC')::date AS d FROM readings_0001) days;
INSERT INTO readings SELECT time, device, metric, value, seq, batch FROM readings_0001;
DROP TABLE readings_0001;

CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);
CREATE TABLE rollup_1d (LIKE rollup_1m INCLUDING ALL);
-- Merges update the same rows again and again (the current hour and day, the latest
-- value): room on each page lets those be HOT updates, which touch no index.
ALTER TABLE rollup_1m SET (fillfactor = 80);
ALTER TABLE rollup_1h SET (fillfactor = 70);
ALTER TABLE rollup_1d SET (fillfactor = 70);
ALTER TABLE latest SET (fillfactor = 70);
-- City-wide and segment queries read one metric across many devices.
CREATE INDEX rollup_1h_metric_bucket ON rollup_1h (metric, bucket);
CREATE INDEX rollup_1d_metric_bucket ON rollup_1d (metric, bucket);

INSERT INTO rollup_1h (bucket, device, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('hour', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', device, metric, sum(count), sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM rollup_1m GROUP BY 1, 2, 3;
INSERT INTO rollup_1d (bucket, device, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('day', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', device, metric, sum(count), sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM rollup_1h GROUP BY 1, 2, 3;
