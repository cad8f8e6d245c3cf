-- Hourly and daily rollups per road segment and metric ('' = devices without a segment),
-- merged in each batch's transaction with the segment its device is linked to then.
CREATE TABLE segment_rollup_1h (
    bucket_ms    INTEGER NOT NULL,
    segment      TEXT NOT NULL,
    metric       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    sum          REAL NOT NULL,
    min          REAL NOT NULL,
    max          REAL NOT NULL,
    last_value   REAL NOT NULL,
    last_time_ms INTEGER NOT NULL,
    PRIMARY KEY (segment, metric, bucket_ms)
) WITHOUT ROWID;
CREATE TABLE segment_rollup_1d (
    bucket_ms    INTEGER NOT NULL,
    segment      TEXT NOT NULL,
    metric       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    sum          REAL NOT NULL,
    min          REAL NOT NULL,
    max          REAL NOT NULL,
    last_value   REAL NOT NULL,
    last_time_ms INTEGER NOT NULL,
    PRIMARY KEY (segment, metric, bucket_ms)
) WITHOUT ROWID;
CREATE INDEX segment_rollup_1h_metric_bucket ON segment_rollup_1h (metric, bucket_ms);
CREATE INDEX segment_rollup_1d_metric_bucket ON segment_rollup_1d (metric, bucket_ms);
