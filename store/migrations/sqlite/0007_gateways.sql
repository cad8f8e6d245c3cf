-- A device reached through a gateway (see the PostgreSQL migration 0008).
ALTER TABLE devices ADD COLUMN gateway_id TEXT REFERENCES devices (id);
