-- Packed slot sums and learned slots (see the PostgreSQL migration 21).
CREATE TABLE baseline_sums (
    bucket_ms    INTEGER PRIMARY KEY,
    summed_at_ms INTEGER NOT NULL,
    sums         BLOB NOT NULL
);

DROP TABLE baselines;
CREATE TABLE baselines (
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('device', 'segment')),
    subject       TEXT NOT NULL,
    metric        TEXT NOT NULL,
    day           INTEGER NOT NULL CHECK (day >= 0 AND day < 7),
    slots         BLOB NOT NULL,
    learned_at_ms INTEGER NOT NULL,
    PRIMARY KEY (subject_kind, subject, metric, day)
) WITHOUT ROWID;
CREATE INDEX baselines_metric ON baselines (metric, subject_kind);
DELETE FROM baseline_state;
