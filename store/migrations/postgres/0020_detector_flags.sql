-- Detector health (telemetry::health, docs/detector-health.md): the intervals during which a
-- health rule flagged a device's data (stuck, zero_busy, missing, implausible). `to_time`
-- is NULL while the flag holds; at most one interval per (device, rule) is open. A
-- device's readings with from_time <= time < to_time are flagged and can be left out of
-- history (`exclude_flagged`).
CREATE TABLE detector_flags (
    id        bigserial PRIMARY KEY,
    device_id text NOT NULL,
    rule_id   text NOT NULL,
    flag      text NOT NULL CHECK (flag IN ('stuck', 'zero_busy', 'missing', 'implausible')),
    from_time timestamptz NOT NULL,
    to_time   timestamptz,
    CHECK (to_time IS NULL OR to_time >= from_time)
);
CREATE UNIQUE INDEX detector_flags_one_open ON detector_flags (device_id, rule_id) WHERE to_time IS NULL;
CREATE INDEX detector_flags_device_time ON detector_flags (device_id, from_time);
CREATE INDEX detector_flags_time ON detector_flags (from_time);
