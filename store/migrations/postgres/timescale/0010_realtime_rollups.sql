-- Nothing to do: rollup_1h and rollup_1d are continuous aggregates with real-time
-- aggregation already (see native/0010 for the same layout without TimescaleDB).
SELECT 1;
