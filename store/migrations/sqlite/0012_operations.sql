-- Road operations: incidents, roadworks, closures and planned events on the Road Cadastre
-- (store/src/operations.rs). `body` is the operation as the API shows it; the other
-- columns are what lists filter on, kept in step with it by every write. `version` is the
-- optimistic-concurrency counter: a write names the version it read and changes nothing
-- when another write came first.
CREATE TABLE operations (
    id              TEXT PRIMARY KEY,
    version         INTEGER NOT NULL CHECK (version >= 1),
    kind            TEXT NOT NULL CHECK (kind IN ('incident', 'roadworks', 'closure', 'event')),
    status          TEXT NOT NULL CHECK (status IN ('planned', 'active', 'ended', 'cancelled')),
    agency          TEXT NOT NULL,
    closes_road     INTEGER NOT NULL CHECK (closes_road IN (0, 1)),
    -- The window lists select on: actual, else planned (ms); an active operation without
    -- an actual end runs on (`to_ms` = i64::MAX).
    from_ms         INTEGER NOT NULL,
    to_ms           INTEGER NOT NULL,
    -- The bounding box of the segments, point and area (null: no geometry).
    min_lon         REAL,
    min_lat         REAL,
    max_lon         REAL,
    max_lat         REAL,
    -- Creation with an Idempotency-Key: the key (per creator) and the request's digest.
    created_by      TEXT NOT NULL,
    idempotency_key TEXT,
    request_digest  TEXT,
    body            TEXT NOT NULL
);
CREATE UNIQUE INDEX operations_idempotency ON operations (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_open ON operations (status, id) WHERE status IN ('planned', 'active');

-- The segments an operation covers, for the alert suppression's look-up by segment.
CREATE TABLE operation_segments (
    operation_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    segment      TEXT NOT NULL,
    PRIMARY KEY (operation_id, segment)
);
CREATE INDEX operation_segments_by_segment ON operation_segments (segment);

-- The audit trail: every change, who made it, when, and what changed (field: [from, to]).
CREATE TABLE operation_changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    operation_id TEXT NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL,
    by_name      TEXT NOT NULL,
    action       TEXT NOT NULL,
    changes      TEXT NOT NULL
);
CREATE INDEX operation_changes_by_operation ON operation_changes (operation_id, id);
