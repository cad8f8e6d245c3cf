-- The Road Cadastre import (see the PostgreSQL migration 16): versioned, retired
-- segments with their bounding box; device positions and bearings.
ALTER TABLE road_segments ADD COLUMN one_way INTEGER NOT NULL DEFAULT 0;
ALTER TABLE road_segments ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE road_segments ADD COLUMN valid_from_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE road_segments ADD COLUMN retired_at_ms INTEGER;
ALTER TABLE road_segments ADD COLUMN min_lon REAL;
ALTER TABLE road_segments ADD COLUMN min_lat REAL;
ALTER TABLE road_segments ADD COLUMN max_lon REAL;
ALTER TABLE road_segments ADD COLUMN max_lat REAL;

UPDATE road_segments SET
    valid_from_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000,
    min_lon = (SELECT min(json_extract(value, '$[0]')) FROM json_each(road_segments.coordinates)),
    min_lat = (SELECT min(json_extract(value, '$[1]')) FROM json_each(road_segments.coordinates)),
    max_lon = (SELECT max(json_extract(value, '$[0]')) FROM json_each(road_segments.coordinates)),
    max_lat = (SELECT max(json_extract(value, '$[1]')) FROM json_each(road_segments.coordinates));

CREATE INDEX road_segments_live_bbox ON road_segments (min_lon, max_lon) WHERE retired_at_ms IS NULL;

ALTER TABLE devices ADD COLUMN lon REAL;
ALTER TABLE devices ADD COLUMN lat REAL;
ALTER TABLE devices ADD COLUMN bearing_deg REAL;
