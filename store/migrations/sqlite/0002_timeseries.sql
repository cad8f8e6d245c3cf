-- Hourly and daily rollups, merged by the writer in each batch's transaction like
-- rollup_1m. Retention deletes rows by time (the embedded store has no partitions).
CREATE TABLE rollup_1h (
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
CREATE TABLE rollup_1d (
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
CREATE INDEX rollup_1h_metric_bucket ON rollup_1h (metric, bucket_ms);
CREATE INDEX rollup_1d_metric_bucket ON rollup_1d (metric, bucket_ms);
CREATE INDEX readings_metric_time ON readings (metric, time_ms);

INSERT INTO rollup_1h
SELECT g.b, g.device, g.metric, g.c, g.s, g.mn, g.mx,
       (SELECT r.last_value FROM rollup_1m r WHERE r.device = g.device AND r.metric = g.metric
          AND r.bucket_ms >= g.b AND r.bucket_ms < g.b + 3600000 ORDER BY r.last_time_ms DESC LIMIT 1),
       g.lt
FROM (SELECT (bucket_ms / 3600000) * 3600000 AS b, device, metric, sum(count) AS c, sum(sum) AS s, min(min) AS mn,
             max(max) AS mx, max(last_time_ms) AS lt FROM rollup_1m GROUP BY 1, 2, 3) g;
INSERT INTO rollup_1d
SELECT g.b, g.device, g.metric, g.c, g.s, g.mn, g.mx,
       (SELECT r.last_value FROM rollup_1h r WHERE r.device = g.device AND r.metric = g.metric
          AND r.bucket_ms >= g.b AND r.bucket_ms < g.b + 86400000 ORDER BY r.last_time_ms DESC LIMIT 1),
       g.lt
FROM (SELECT (bucket_ms / 86400000) * 86400000 AS b, device, metric, sum(count) AS c, sum(sum) AS s, min(min) AS mn,
             max(max) AS mx, max(last_time_ms) AS lt FROM rollup_1h GROUP BY 1, 2, 3) g;
