-- The Road Cadastre import (`sccr segments import`, store/src/cadastre.rs). Segments are
-- versioned and retired instead of deleted (their rollups, alerts and device history
-- stay); each carries its bounding box, so an area query reads only the segments that
-- may cross it; devices may carry a position and a bearing, by which the import links
-- them to the nearest segment.
ALTER TABLE road_segments
    ADD COLUMN one_way    boolean NOT NULL DEFAULT false,
    ADD COLUMN version    integer NOT NULL DEFAULT 1,
    ADD COLUMN valid_from timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN retired_at timestamptz,
    ADD COLUMN min_lon    double precision,
    ADD COLUMN min_lat    double precision,
    ADD COLUMN max_lon    double precision,
    ADD COLUMN max_lat    double precision;

UPDATE road_segments s
SET min_lon = b.min_lon, min_lat = b.min_lat, max_lon = b.max_lon, max_lat = b.max_lat
FROM (
    SELECT r.id, min((p ->> 0)::float8) AS min_lon, min((p ->> 1)::float8) AS min_lat,
           max((p ->> 0)::float8) AS max_lon, max((p ->> 1)::float8) AS max_lat
    FROM road_segments r, jsonb_array_elements(r.coordinates) p
    GROUP BY r.id
) b
WHERE b.id = s.id;

CREATE INDEX road_segments_live_bbox ON road_segments (min_lon, max_lon) WHERE retired_at IS NULL;

ALTER TABLE devices
    ADD COLUMN lon         double precision,
    ADD COLUMN lat         double precision,
    ADD COLUMN bearing_deg double precision,
    ADD CONSTRAINT devices_position_whole CHECK ((lon IS NULL) = (lat IS NULL)),
    ADD CONSTRAINT devices_bearing_needs_position CHECK (bearing_deg IS NULL OR lon IS NOT NULL);
