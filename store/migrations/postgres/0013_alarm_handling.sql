-- Alarm handling (ISA-18.2): the `returned` state (the condition ended while the alert was
-- unacknowledged; it stays open until an operator acknowledges it), whether the condition
-- still holds (`active`), shelving by an operator with a reason and an expiry, suppression
-- by design, and the message code with its parameters. Every move, shelving and
-- suppression included, is an `alert_events` row naming its `action`.
ALTER TABLE alerts
    ADD COLUMN active              boolean NOT NULL DEFAULT true,
    ADD COLUMN returned_at         timestamptz,
    ADD COLUMN shelved_by          text,
    ADD COLUMN shelved_reason      text,
    ADD COLUMN shelved_at          timestamptz,
    ADD COLUMN shelved_until       timestamptz,
    ADD COLUMN suppressed_reason   text,
    ADD COLUMN suppressed_by_alert bigint,
    ADD COLUMN code                text NOT NULL DEFAULT 'legacy',
    ADD COLUMN params              jsonb NOT NULL DEFAULT '{}';
UPDATE alerts SET active = false WHERE state = 'cleared';
UPDATE alerts SET code = kind WHERE kind <> 'single';

-- The state checks name the new state; they were created unnamed, so drop them by lookup.
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
             WHERE contype = 'c' AND conrelid IN ('alerts'::regclass, 'alert_events'::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END $$;

ALTER TABLE alerts
    ADD CONSTRAINT alerts_subject_kind CHECK (subject_kind IN ('device', 'segment', 'rule')),
    ADD CONSTRAINT alerts_kind CHECK (kind IN ('single', 'segment_group', 'rate_limit_overflow')),
    ADD CONSTRAINT alerts_severity CHECK (severity IN ('info', 'warning', 'critical')),
    ADD CONSTRAINT alerts_state CHECK (state IN ('raised', 'acknowledged', 'returned', 'cleared')),
    ADD CONSTRAINT alerts_members CHECK (members >= 0),
    ADD CONSTRAINT alerts_raised CHECK (state <> 'raised' OR (acknowledged_at IS NULL AND cleared_at IS NULL)),
    ADD CONSTRAINT alerts_acknowledged CHECK (state <> 'acknowledged' OR (acknowledged_at IS NOT NULL AND cleared_at IS NULL)),
    ADD CONSTRAINT alerts_returned CHECK (state <> 'returned' OR (returned_at IS NOT NULL AND acknowledged_at IS NULL AND cleared_at IS NULL AND NOT active)),
    ADD CONSTRAINT alerts_cleared CHECK (state <> 'cleared' OR cleared_at IS NOT NULL),
    ADD CONSTRAINT alerts_ack_by CHECK ((acknowledged_at IS NULL) = (acknowledged_by IS NULL)),
    ADD CONSTRAINT alerts_shelf CHECK ((shelved_until IS NULL) = (shelved_at IS NULL) AND (shelved_until IS NULL) = (shelved_reason IS NULL)),
    ADD CONSTRAINT alerts_code CHECK (code ~ '^[a-z][a-z0-9_]{0,63}$');

ALTER TABLE alert_events ADD COLUMN action text;
UPDATE alert_events SET action = CASE to_state WHEN 'acknowledged' THEN 'acknowledge' WHEN 'cleared' THEN 'clear' END
    WHERE from_state IS NOT NULL;
ALTER TABLE alert_events
    ADD CONSTRAINT alert_events_from CHECK (from_state IN ('raised', 'acknowledged', 'returned')),
    ADD CONSTRAINT alert_events_to CHECK (to_state IN ('raised', 'acknowledged', 'returned', 'cleared')),
    ADD CONSTRAINT alert_events_action CHECK (action IN ('acknowledge', 'clear', 'end', 'resume', 'shelve', 'unshelve', 'suppress', 'unsuppress')),
    ADD CONSTRAINT alert_events_raise CHECK ((from_state IS NULL) = (action IS NULL));

-- Open shelves, for their expiry.
CREATE INDEX alerts_shelved_until ON alerts (shelved_until) WHERE shelved_until IS NOT NULL;
