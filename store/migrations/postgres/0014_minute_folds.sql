-- Closed minutes are written once, from the raw readings, instead of being merged batch
-- by batch (see `store/src/pg/rollup.rs` and ARCHITECTURE.md, "Exact rollups").
--
-- `minute_marks` holds two instants. `sealed`: a batch's readings from this instant on
-- are live, and stored without a batch id; readings before it are late, tagged with the
-- batch's id and registered in `rollup_pending` for the rollup merger, as before. Every
-- batch reads `sealed` FOR SHARE in its own transaction, and the fold moves it with an
-- UPDATE, which waits for the batches in flight: once the move has committed, no live
-- reading before the new mark can still be written. `folded`: rollup_1m (and the segment
-- rollups and `latest`) hold every live reading before this instant. The fold aggregates
-- the untagged readings of [folded, sealed) in one statement and moves `folded` in the
-- same transaction (taking the row FOR UPDATE, so concurrent folds cannot both count a
-- range). Queries read rollups before `folded` and raw readings from it on. The fold finds
-- a minute's readings by time (migration 15).
CREATE TABLE minute_marks (
    name text PRIMARY KEY CHECK (name IN ('sealed', 'folded')),
    at   timestamptz NOT NULL
);
-- Every reading stored so far carries a batch id (or predates the rollup log and is in
-- the rollups already): the marks start at the current minute.
INSERT INTO minute_marks (name, at) VALUES
    ('sealed', date_trunc('minute', now())), ('folded', date_trunc('minute', now()));

-- Only late readings carry a batch id now: the merger's index shrinks to them.
DROP INDEX readings_batch;
CREATE INDEX readings_late_batch ON readings (batch) WHERE batch IS NOT NULL;
