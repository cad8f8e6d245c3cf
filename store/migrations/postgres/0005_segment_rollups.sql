-- Hourly and daily rollups per road segment (the Road Cadastre's unit) and metric, merged
-- by the rollup merger from the same batches as the device rollups. A reading counts for
-- the segment its device was linked to when it was merged; readings of devices without a
-- segment go to segment '' so that the sum over all segments is the whole city. Segment
-- and city history over hours and days read these instead of every device's rows.
CREATE TABLE segment_rollup_1h (
    bucket     timestamptz NOT NULL,
    segment    text NOT NULL,
    metric     text NOT NULL,
    count      bigint NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    last_value double precision NOT NULL,
    last_time  timestamptz NOT NULL,
    PRIMARY KEY (segment, metric, bucket)
) WITH (fillfactor = 70);
CREATE TABLE segment_rollup_1d (LIKE segment_rollup_1h INCLUDING ALL) WITH (fillfactor = 70);
CREATE INDEX segment_rollup_1h_metric_bucket ON segment_rollup_1h (metric, bucket);
CREATE INDEX segment_rollup_1d_metric_bucket ON segment_rollup_1d (metric, bucket);

-- What is already in the device rollups (rows merged before this migration).
INSERT INTO segment_rollup_1h (bucket, segment, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('hour', r.bucket), coalesce(d.segment_id, ''), r.metric, sum(r.count), sum(r.sum), min(r.min), max(r.max),
       (max(ARRAY[date_part('epoch', r.last_time), r.last_value]))[2], max(r.last_time)
FROM rollup_1m r LEFT JOIN devices d ON d.id = r.device GROUP BY 1, 2, 3;
INSERT INTO segment_rollup_1d (bucket, segment, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('day', bucket), segment, metric, sum(count), sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM segment_rollup_1h GROUP BY 1, 2, 3;
