-- From when each level is whole: retention has dropped older rows. A reading older than
-- the raw horizon is refused (its raw row, the dedupe record, may be gone while its
-- rollups remain), and history reads the ends of a range only from levels that still
-- hold them. Written by maintenance in the transaction that drops the rows.
CREATE TABLE retention_horizons (
    level   text PRIMARY KEY CHECK (level IN ('raw', '1m', '1h', '1d')),
    horizon timestamptz NOT NULL
);
