-- The stream's exported state in parts (the alert engine's head, its book of open alerts,
-- one row per device and per segment), so a checkpoint rewrites only the parts that
-- changed since the previous one. A checkpoint's rows are written in one transaction.
CREATE TABLE stream_state_parts (
    key   text NOT NULL,
    part  text NOT NULL,
    value jsonb NOT NULL,
    PRIMARY KEY (key, part)
);
