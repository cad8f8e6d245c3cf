-- From when each level is whole: retention has deleted older rows (see the PostgreSQL
-- migration of the same name).
CREATE TABLE retention_horizons (
    level      TEXT PRIMARY KEY CHECK (level IN ('raw', '1m', '1h', '1d')),
    horizon_ms INTEGER NOT NULL
);
