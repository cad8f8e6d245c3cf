-- Alarm handling (ISA-18.2): the `returned` state (the condition ended while the alert was
-- unacknowledged; it stays open until an operator acknowledges it), whether the condition
-- still holds (`active`), shelving by an operator with a reason and an expiry, suppression
-- by design, and the message code with its parameters. Every move, shelving and
-- suppression included, is an `alert_events` row naming its `action`.
-- SQLite cannot change a CHECK constraint: both tables are rebuilt and copied.
CREATE TABLE alerts_next (
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    rule                   TEXT NOT NULL,
    subject_kind           TEXT NOT NULL CHECK (subject_kind IN ('device', 'segment', 'rule')),
    subject                TEXT NOT NULL,
    kind                   TEXT NOT NULL DEFAULT 'single' CHECK (kind IN ('single', 'segment_group', 'rate_limit_overflow')),
    severity               TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state                  TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'returned', 'cleared')),
    message                TEXT NOT NULL,
    value                  REAL,
    since_ms               INTEGER NOT NULL,
    raised_at_ms           INTEGER NOT NULL,
    acknowledged_at_ms     INTEGER,
    acknowledged_by        TEXT,
    ack_note               TEXT,
    cleared_at_ms          INTEGER,
    cleared_by             TEXT,
    clear_note             TEXT,
    members                INTEGER NOT NULL DEFAULT 1 CHECK (members >= 0),
    active                 INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    returned_at_ms         INTEGER,
    shelved_by             TEXT,
    shelved_reason         TEXT,
    shelved_at_ms          INTEGER,
    shelved_until_ms       INTEGER,
    suppressed_reason      TEXT,
    suppressed_by_alert    INTEGER,
    code                   TEXT NOT NULL DEFAULT 'legacy',
    params                 TEXT NOT NULL DEFAULT '{}',
    CHECK (state <> 'raised' OR (acknowledged_at_ms IS NULL AND cleared_at_ms IS NULL)),
    CHECK (state <> 'acknowledged' OR (acknowledged_at_ms IS NOT NULL AND cleared_at_ms IS NULL)),
    CHECK (state <> 'returned' OR (returned_at_ms IS NOT NULL AND acknowledged_at_ms IS NULL AND cleared_at_ms IS NULL AND active = 0)),
    CHECK (state <> 'cleared' OR cleared_at_ms IS NOT NULL),
    CHECK ((acknowledged_at_ms IS NULL) = (acknowledged_by IS NULL)),
    CHECK ((shelved_until_ms IS NULL) = (shelved_at_ms IS NULL) AND (shelved_until_ms IS NULL) = (shelved_reason IS NULL))
);
INSERT INTO alerts_next (id, rule, subject_kind, subject, kind, severity, state, message, value,
        since_ms, raised_at_ms, acknowledged_at_ms, acknowledged_by, ack_note, cleared_at_ms,
        cleared_by, clear_note, members, active, code)
    SELECT id, rule, subject_kind, subject, kind, severity, state, message, value,
        since_ms, raised_at_ms, acknowledged_at_ms, acknowledged_by, ack_note, cleared_at_ms,
        cleared_by, clear_note, members, state <> 'cleared',
        CASE kind WHEN 'single' THEN 'legacy' ELSE kind END
    FROM alerts;

CREATE TABLE alert_events_next (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    INTEGER NOT NULL REFERENCES alerts_next (id) ON DELETE CASCADE,
    from_state  TEXT CHECK (from_state IN ('raised', 'acknowledged', 'returned')),
    to_state    TEXT NOT NULL CHECK (to_state IN ('raised', 'acknowledged', 'returned', 'cleared')),
    -- The move (NULL for the raise).
    action      TEXT CHECK (action IN ('acknowledge', 'clear', 'end', 'resume', 'shelve', 'unshelve', 'suppress', 'unsuppress')),
    by          TEXT,
    note        TEXT,
    at_ms       INTEGER NOT NULL,
    CHECK ((from_state IS NULL) = (action IS NULL))
);
INSERT INTO alert_events_next (id, alert_id, from_state, to_state, action, by, note, at_ms)
    SELECT id, alert_id, from_state, to_state,
        CASE WHEN from_state IS NULL THEN NULL WHEN to_state = 'acknowledged' THEN 'acknowledge' ELSE 'clear' END,
        by, note, at_ms
    FROM alert_events;

DROP TABLE alert_events;
DROP TABLE alerts;
ALTER TABLE alerts_next RENAME TO alerts;
ALTER TABLE alert_events_next RENAME TO alert_events;

CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (rule, subject_kind, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_by_raised ON alerts (raised_at_ms DESC, id DESC);
CREATE INDEX alerts_by_state ON alerts (state, raised_at_ms DESC, id DESC);
CREATE INDEX alerts_by_subject ON alerts (subject_kind, subject, raised_at_ms DESC, id DESC);
CREATE INDEX alerts_shelved_until ON alerts (shelved_until_ms) WHERE shelved_until_ms IS NOT NULL;
CREATE INDEX alert_events_by_alert ON alert_events (alert_id, id);
