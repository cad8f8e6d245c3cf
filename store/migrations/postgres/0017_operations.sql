-- Road operations: incidents, roadworks, closures and planned events on the Road Cadastre
-- (store/src/operations.rs). `body` is the operation as the API shows it; the other
-- columns are what lists filter on, kept in step with it by every write. `version` is the
-- optimistic-concurrency counter: a write names the version it read and changes nothing
-- when another write came first.
CREATE TABLE operations (
    id              text PRIMARY KEY,
    version         bigint NOT NULL CHECK (version >= 1),
    kind            text NOT NULL CHECK (kind IN ('incident', 'roadworks', 'closure', 'event')),
    status          text NOT NULL CHECK (status IN ('planned', 'active', 'ended', 'cancelled')),
    agency          text NOT NULL,
    closes_road     boolean NOT NULL,
    -- The window lists select on: actual, else planned (ms); an active operation without
    -- an actual end runs on (`to_ms` = i64::MAX).
    from_ms         bigint NOT NULL,
    to_ms           bigint NOT NULL,
    -- The bounding box of the segments, point and area (null: no geometry).
    min_lon         double precision,
    min_lat         double precision,
    max_lon         double precision,
    max_lat         double precision,
    -- Creation with an Idempotency-Key: the key (per creator) and the request's digest.
    created_by      text NOT NULL,
    idempotency_key text,
    request_digest  text,
    body            jsonb NOT NULL
);
CREATE UNIQUE INDEX operations_idempotency ON operations (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX operations_open ON operations (status, id) WHERE status IN ('planned', 'active');

-- The segments an operation covers, for the alert suppression's look-up by segment.
CREATE TABLE operation_segments (
    operation_id text NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    segment      text NOT NULL,
    PRIMARY KEY (operation_id, segment)
);
CREATE INDEX operation_segments_by_segment ON operation_segments (segment);

-- The audit trail: every change, who made it, when, and what changed (field: [from, to]).
CREATE TABLE operation_changes (
    id           bigserial PRIMARY KEY,
    operation_id text NOT NULL REFERENCES operations (id) ON DELETE CASCADE,
    version      bigint NOT NULL,
    at_ms        bigint NOT NULL,
    by_name      text NOT NULL,
    action       text NOT NULL,
    changes      jsonb NOT NULL
);
CREATE INDEX operation_changes_by_operation ON operation_changes (operation_id, id);
