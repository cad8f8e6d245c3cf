-- Links to the city's layers: the transactional outbox, its webhook subscriptions and
-- deliveries, device commands, and each device's last known status.
--
-- `outbox` rows are written in the same transaction as the change they describe (an
-- alert move, a device status change, a command result). The dispatcher fans each row
-- out to the enabled subscriptions whose type filter matches (one `webhook_deliveries`
-- row each, then `fanned_out` is set), and delivers: a delivery is claimed by moving its
-- `next_attempt_at` forward by a lease (`FOR UPDATE SKIP LOCKED`, so replicas share the
-- work), and only when no earlier delivery of the same subject to the same subscription
-- is still pending (order per subject).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    -- CloudEvents type, e.g. it.firenze.sccr.alert.raised
    type        text NOT NULL,
    -- CloudEvents subject, e.g. alert/42, device/loop-1, command/<uuid>
    subject     text NOT NULL,
    time        timestamptz NOT NULL,
    data        jsonb NOT NULL,
    fanned_out  boolean NOT NULL DEFAULT false
);
CREATE INDEX outbox_to_fan_out ON outbox (id) WHERE NOT fanned_out;

CREATE TABLE webhooks (
    id          bigserial PRIMARY KEY,
    url         text NOT NULL,
    -- Event types delivered (exact, or a prefix ending in '*'); empty: all.
    types       text[] NOT NULL DEFAULT '{}',
    secret      text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    format      text NOT NULL DEFAULT 'cloudevents' CHECK (format IN ('cloudevents', 'ngsi-ld')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    webhook_id      bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    outbox_id       bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    subject         text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (webhook_id, outbox_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, subject, outbox_id) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (webhook_id, state, outbox_id DESC);

CREATE TABLE commands (
    id              text PRIMARY KEY,
    device          text NOT NULL,
    name            text NOT NULL,
    args            jsonb NOT NULL,
    idempotency_key text,
    status          text NOT NULL CHECK (status IN ('pending', 'sent', 'acked', 'rejected', 'failed', 'expired')),
    detail          text,
    created_by      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    expires_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE UNIQUE INDEX commands_idempotency ON commands (device, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX commands_by_device ON commands (device, created_at DESC);
CREATE INDEX commands_open ON commands (expires_at) WHERE status IN ('pending', 'sent');

CREATE TABLE device_status (
    device      text PRIMARY KEY,
    state       text NOT NULL CHECK (state IN ('online', 'offline')),
    since       timestamptz NOT NULL
);
