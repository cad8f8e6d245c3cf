-- Alerts and their lifecycle: raised -> acknowledged -> cleared, every move an
-- `alert_events` row written in the same transaction as the change to `alerts`.
CREATE TABLE alerts (
    id              bigserial PRIMARY KEY,
    rule            text NOT NULL,
    subject_kind    text NOT NULL CHECK (subject_kind IN ('device', 'segment', 'rule')),
    -- The device or segment id; '' for alerts about a rule as a whole.
    subject         text NOT NULL,
    kind            text NOT NULL DEFAULT 'single' CHECK (kind IN ('single', 'segment_group', 'rate_limit_overflow')),
    severity        text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state           text NOT NULL CHECK (state IN ('raised', 'acknowledged', 'cleared')),
    message         text NOT NULL,
    value           double precision,
    -- When the condition began (the subject's event time); raised_at is when it was raised.
    since           timestamptz NOT NULL,
    raised_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    ack_note        text,
    cleared_at      timestamptz,
    -- NULL with cleared_at set: cleared automatically when the condition ended.
    cleared_by      text,
    clear_note      text,
    -- Subjects folded into a grouped alert (1 for a single one).
    members         integer NOT NULL DEFAULT 1 CHECK (members >= 0),
    CHECK (state <> 'raised' OR (acknowledged_at IS NULL AND cleared_at IS NULL)),
    CHECK (state <> 'acknowledged' OR (acknowledged_at IS NOT NULL AND cleared_at IS NULL)),
    CHECK (state <> 'cleared' OR cleared_at IS NOT NULL),
    CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL))
);

-- At most one open alert per (rule, subject): a second raise of an open condition, from
-- any task or replica, conflicts here and inserts nothing.
CREATE UNIQUE INDEX alerts_one_open_per_key ON alerts (rule, subject_kind, subject) WHERE state <> 'cleared';
CREATE INDEX alerts_by_raised ON alerts (raised_at DESC, id DESC);
CREATE INDEX alerts_by_state ON alerts (state, raised_at DESC, id DESC);
CREATE INDEX alerts_by_subject ON alerts (subject_kind, subject, raised_at DESC, id DESC);

CREATE TABLE alert_events (
    id         bigserial PRIMARY KEY,
    alert_id   bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    -- NULL for the raise.
    from_state text CHECK (from_state IN ('raised', 'acknowledged')),
    to_state   text NOT NULL CHECK (to_state IN ('raised', 'acknowledged', 'cleared')),
    -- The operator; NULL for moves the stream made.
    by         text,
    note       text,
    at         timestamptz NOT NULL
);
CREATE INDEX alert_events_by_alert ON alert_events (alert_id, id);

-- State the stream exports to survive a restart (the alert engine's open alerts and
-- timers), one JSON document per key.
CREATE TABLE stream_state (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
