-- Links to the city's layers: the transactional outbox, its webhook subscriptions and
-- deliveries, device commands, and each device's last known status. Times are Unix
-- milliseconds (UTC). See the PostgreSQL migration for the design.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    type        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    fanned_out  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_to_fan_out ON outbox (id) WHERE fanned_out = 0;

CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    url           TEXT NOT NULL,
    -- JSON array of event types (exact, or a prefix ending in '*'); empty: all.
    types         TEXT NOT NULL DEFAULT '[]',
    secret        TEXT NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    format        TEXT NOT NULL DEFAULT 'cloudevents' CHECK (format IN ('cloudevents', 'ngsi-ld')),
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    webhook_id         INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    outbox_id          INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    subject            TEXT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    delivered_at_ms    INTEGER,
    PRIMARY KEY (webhook_id, outbox_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, subject, outbox_id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (webhook_id, state, outbox_id DESC);

CREATE TABLE commands (
    id              TEXT PRIMARY KEY,
    device          TEXT NOT NULL,
    name            TEXT NOT NULL,
    args            TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'acked', 'rejected', 'failed', 'expired')),
    detail          TEXT,
    created_by      TEXT,
    created_at_ms   INTEGER NOT NULL,
    sent_at_ms      INTEGER,
    expires_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER
);
CREATE UNIQUE INDEX commands_idempotency ON commands (device, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX commands_by_device ON commands (device, created_at_ms DESC);
CREATE INDEX commands_open ON commands (expires_at_ms) WHERE status IN ('pending', 'sent');

CREATE TABLE device_status (
    device    TEXT PRIMARY KEY,
    state     TEXT NOT NULL CHECK (state IN ('online', 'offline')),
    since_ms  INTEGER NOT NULL
);
