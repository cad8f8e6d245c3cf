-- Who may use the API and the device registry's lifecycle.
--
-- API tokens are kept as the SHA-256 digest of the token (hex); the token itself is shown
-- once when it is created. A device's MQTT password is kept as the broker's own
-- PBKDF2-SHA512 hash (Mosquitto `$7$` format) so the password file can be written from
-- this table.

CREATE TABLE api_tokens (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    role       text NOT NULL CHECK (role IN ('admin', 'operator', 'planner', 'device')),
    digest     text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Privileged actions and alert acknowledgements: who did what to which object, when.
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    role   text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);

ALTER TABLE devices
    ADD COLUMN mqtt_password_hash text,
    ADD COLUMN decommissioned_at  timestamptz;
