-- Alerts and their lifecycle: raised -> acknowledged -> cleared, every move an
-- `alert_events` row written in the same transaction as the change to `alerts`.
-- Times are Unix milliseconds (UTC).
CREATE TABLE alerts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    rule               TEXT NOT NULL,
    subject_kind       TEXT NOT NULL CHECK (subject_kind IN ('device', 'segment', 'rule')),
    -- The device or segment id; '' for alerts about a rule as a whole.
    subject            TEXT NOT NULL,
    kind               TEXT NOT NULL DEFAULT 'single' CHECK (kind IN ('single', 'segment_group', 'rate_limit_overflow')),
    severity           TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state              TEXT NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
    message            TEXT NOT NULL,
    value              REAL,
    -- When the condition began (the subject's event time); raised_at_ms is when it was raised.
    since_ms           INTEGER NOT NULL,
    raised_at_ms       INTEGER NOT NULL,
    acknowledged_at_ms INTEGER,
    acknowledged_by    TEXT,
    ack_note           TEXT,
    cleared_at_ms      INTEGER,
    -- NULL with cleared_at_ms set: cleared automatically when the condition ended.
    cleared_by         TEXT,
    clear_note         TEXT,
    -- Subjects folded into a grouped alert (1 for a single one).
    members            INTEGER NOT NULL DEFAULT 1 CHECK (members >= 0),
    CHECK (state <> 'raised' OR (acknowledged_at_ms IS NULL AND cleared_at_ms IS NULL)),
    CHECK (state <> 'acknowledged' OR (acknowledged_at_ms IS NOT NULL AND cleared_at_ms IS NULL)),
    CHECK (state <> 'cleared' OR cleared_at_ms IS NOT NULL),
    CHECK ((acknowledged_at_ms IS NULL) = (acknowledged_by IS NULL))
);

-- At most one open alert per (rule, subject): a second raise of an open condition, from
-- any task or replica, conflicts here and inserts nothing.
CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (rule, subject_kind, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_by_raised ON alerts (raised_at_ms DESC, id DESC);
CREATE INDEX alerts_by_state ON alerts (state, raised_at_ms DESC, id DESC);
CREATE INDEX alerts_by_subject ON alerts (subject_kind, subject, raised_at_ms DESC, id DESC);

CREATE TABLE alert_events (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id   INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    -- NULL for the raise.
    from_state         TEXT CHECK (from_state IN ('raised', 'acknowledged')),
    to_state           TEXT NOT NULL CHECK (to_state IN ('raised', 'acknowledged', 'cleared')),
    -- The operator; NULL for moves the stream made.
    by                 TEXT,
    note               TEXT,
    at_ms              INTEGER NOT NULL
);
CREATE INDEX alert_events_by_alert ON alert_events (alert_id, id);

-- State the stream exports to survive a restart (the alert engine's open alerts and
-- timers), one JSON document per key.
CREATE TABLE stream_state (
    key                TEXT PRIMARY KEY,
    value              TEXT NOT NULL,
    updated_at_ms      INTEGER NOT NULL
);
