-- Learned baselines (see the PostgreSQL migration 19).
CREATE TABLE baselines (
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('device', 'segment')),
    subject       TEXT NOT NULL,
    metric        TEXT NOT NULL,
    slot          INTEGER NOT NULL CHECK (slot >= 0 AND slot < 672),
    centre        REAL NOT NULL,
    spread        REAL NOT NULL,
    samples       INTEGER NOT NULL,
    learned_at_ms INTEGER NOT NULL,
    PRIMARY KEY (subject_kind, subject, metric, slot)
) WITHOUT ROWID;
CREATE INDEX baselines_metric ON baselines (metric, subject_kind);

CREATE TABLE baseline_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    learned_to_ms INTEGER NOT NULL,
    settings      TEXT NOT NULL
);
