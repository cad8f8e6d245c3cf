-- The minute fold (migration 14) reads a minute of readings through the hypertable's own
-- index on time, created with it (migration 3): nothing to add.
SELECT 1;
