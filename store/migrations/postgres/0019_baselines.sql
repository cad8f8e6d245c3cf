-- Learned baselines (telemetry::baseline): per device metric or segment figure and
-- 15-minute slot of the week (0 = Monday 00:00 local), the robust centre and spread of the
-- slot means of the last weeks, and how many samples they came from. Refreshed slot by slot
-- by the baseline refresher; `baseline_state` records up to when slots were learned and
-- with which settings (a change of settings relearns every slot).
CREATE TABLE baselines (
    subject_kind text NOT NULL CHECK (subject_kind IN ('device', 'segment')),
    subject      text NOT NULL,
    metric       text NOT NULL,
    slot         smallint NOT NULL CHECK (slot >= 0 AND slot < 672),
    centre       double precision NOT NULL,
    spread       double precision NOT NULL,
    samples      integer NOT NULL,
    learned_at   timestamptz NOT NULL,
    PRIMARY KEY (subject_kind, subject, metric, slot)
);
CREATE INDEX baselines_metric ON baselines (metric, subject_kind);

CREATE TABLE baseline_state (
    id         smallint PRIMARY KEY CHECK (id = 1),
    learned_to timestamptz NOT NULL,
    settings   text NOT NULL
);
