-- Hourly and daily rollups with real-time aggregation, as on the TimescaleDB path
-- (continuous aggregates with materialized_only = false).
--
-- A merge used to update every key's row of the current hour and day (and minute, and
-- `latest`): with every device reporting, each merge rewrote three rows per key. Now
-- `rollup_1h` and `rollup_1d` are views. Hours before `rollup_marks.hour_mark` are
-- stored in rollup_1h_closed; the hours from the mark on are aggregated from rollup_1m
-- when read (at most ~60 minute rows per key while the mark keeps up). Days likewise,
-- from the hourly view. When an hour has passed, the merger folds it from rollup_1m into
-- rollup_1h_closed and moves the mark in one transaction (days once all their hours are
-- folded). A merge sends the partials of buckets before the marks (late readings)
-- straight into the closed tables, so late readings still update every level exactly.
--
-- Merges lock the marks row FOR SHARE and the fold FOR UPDATE: a fold waits for the
-- merges in flight to commit, and reads rollup_1m after them; a merge that starts during
-- a fold waits for it and then sees the new marks. Buckets are UTC hours and days
-- (date_trunc with the zone, so a session in another time zone reads the same rows).
ALTER TABLE rollup_1h RENAME TO rollup_1h_closed;
ALTER TABLE rollup_1d RENAME TO rollup_1d_closed;
ALTER INDEX rollup_1h_pkey RENAME TO rollup_1h_closed_pkey;
ALTER INDEX rollup_1d_pkey RENAME TO rollup_1d_closed_pkey;
ALTER INDEX rollup_1h_metric_bucket RENAME TO rollup_1h_closed_metric_bucket;
ALTER INDEX rollup_1d_metric_bucket RENAME TO rollup_1d_closed_metric_bucket;

CREATE TABLE rollup_marks (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    hour_mark timestamptz NOT NULL,
    day_mark  timestamptz NOT NULL
);
INSERT INTO rollup_marks (hour_mark, day_mark) VALUES (date_trunc('hour', now(), 'UTC'), date_trunc('day', now(), 'UTC'));
-- From the marks on, the views aggregate rollup_1m, which holds those readings already.
DELETE FROM rollup_1h_closed WHERE bucket >= (SELECT hour_mark FROM rollup_marks);
DELETE FROM rollup_1d_closed WHERE bucket >= (SELECT day_mark FROM rollup_marks);

CREATE VIEW rollup_1h AS
SELECT bucket, device, metric, count, sum, min, max, last_value, last_time FROM rollup_1h_closed
WHERE bucket < (SELECT hour_mark FROM rollup_marks)
UNION ALL
SELECT date_trunc('hour', bucket, 'UTC'), device, metric, sum(count)::int8, sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM rollup_1m WHERE bucket >= (SELECT hour_mark FROM rollup_marks)
GROUP BY 1, 2, 3;

CREATE VIEW rollup_1d AS
SELECT bucket, device, metric, count, sum, min, max, last_value, last_time FROM rollup_1d_closed
WHERE bucket < (SELECT day_mark FROM rollup_marks)
UNION ALL
SELECT date_trunc('day', bucket, 'UTC'), device, metric, sum(count)::int8, sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM rollup_1h WHERE bucket >= (SELECT day_mark FROM rollup_marks)
GROUP BY 1, 2, 3;
