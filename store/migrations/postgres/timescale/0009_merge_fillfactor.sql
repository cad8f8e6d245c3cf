-- As on plain PostgreSQL (native/0009), for the tables the merger updates in place here:
-- rollup_1h and rollup_1d are continuous aggregates, refreshed by TimescaleDB.
ALTER TABLE latest SET (fillfactor = 50);
ALTER TABLE segment_rollup_1h SET (fillfactor = 50);
ALTER TABLE segment_rollup_1d SET (fillfactor = 50);
