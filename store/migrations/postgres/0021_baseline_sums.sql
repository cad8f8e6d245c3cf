-- What a full learning of the baselines reads and writes, packed (store/src/baselines.rs):
--
-- `baseline_sums`: per 15-minute bucket (UTC), every registered device's count and sum of
-- each learned metric's readings, as the refresh summed them from `rollup_1m`. A full
-- relearn (changed settings) reads these ~2,700 rows for 4 weeks instead of every minute
-- rollup (15 times the values, one row each). Kept for the learning window plus a week.
CREATE TABLE baseline_sums (
    bucket    timestamptz PRIMARY KEY,
    summed_at timestamptz NOT NULL,
    -- Per device: u16 LE length, its id, u8 n, then n × (u8 metric index, u32 LE count,
    -- f64 LE sum).
    sums      bytea NOT NULL
);
-- Read whole and often: not compressed.
ALTER TABLE baseline_sums ALTER COLUMN sums SET STORAGE EXTERNAL;

-- The learned slots, one row per subject, metric and local day of the week (96 slots of
-- 17 bytes: centre f64 LE, spread f64 LE, samples u8; samples 0 = not learned), instead
-- of one row per slot: a full relearn writes 7 rows a subject and metric, not 672.
-- Everything is learned again after this migration.
DROP TABLE baselines;
CREATE TABLE baselines (
    subject_kind text NOT NULL CHECK (subject_kind IN ('device', 'segment')),
    subject      text NOT NULL,
    metric       text NOT NULL,
    day          smallint NOT NULL CHECK (day >= 0 AND day < 7),
    slots        bytea NOT NULL,
    learned_at   timestamptz NOT NULL,
    PRIMARY KEY (subject_kind, subject, metric, day)
);
CREATE INDEX baselines_metric ON baselines (metric, subject_kind);
DELETE FROM baseline_state;
