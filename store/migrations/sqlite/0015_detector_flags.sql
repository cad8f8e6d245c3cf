-- Detector flags (see the PostgreSQL migration 20).
CREATE TABLE detector_flags (
    id         INTEGER PRIMARY KEY,
    device_id  TEXT NOT NULL,
    rule_id    TEXT NOT NULL,
    flag       TEXT NOT NULL CHECK (flag IN ('stuck', 'zero_busy', 'missing', 'implausible')),
    from_ms    INTEGER NOT NULL,
    to_ms      INTEGER,
    CHECK (to_ms IS NULL OR to_ms >= from_ms)
);
CREATE UNIQUE INDEX detector_flags_one_open ON detector_flags (device_id, rule_id) WHERE to_ms IS NULL;
CREATE INDEX detector_flags_device_time ON detector_flags (device_id, from_ms);
CREATE INDEX detector_flags_time ON detector_flags (from_ms);
