-- The fold reads a minute of readings by time. Readings arrive nearly in time order, so
-- a block-range index is small, cheap to maintain and selective for the recent pages.
-- The fold summarizes the new block ranges itself before it reads them
-- (brin_summarize_new_values): autosummarize queues one request per range, more than
-- autovacuum's work-item list holds at a city's rates, and an unsummarized range is read
-- by every query that uses the index.
CREATE INDEX readings_time_brin ON readings USING brin (time) WITH (pages_per_range = 32);
