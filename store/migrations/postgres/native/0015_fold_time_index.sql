-- The fold reads a minute of readings by time. Readings arrive nearly in time order, so
-- a block-range index is small, cheap to maintain and selective for the recent pages.
CREATE INDEX readings_time_brin ON readings USING brin (time) WITH (pages_per_range = 16, autosummarize = on);

-- A minute row is now inserted once (late readings update it rarely): pages may fill.
ALTER TABLE rollup_1m SET (fillfactor = 100);
