-- A device reached through a gateway (an edge agent serving several devices, e.g. a
-- traffic cabinet with its loop detectors): the gateway is itself a registered device,
-- and the broker's ACL lets the gateway's account use the topics of its devices.
ALTER TABLE devices ADD COLUMN gateway_id text REFERENCES devices (id);
CREATE INDEX devices_gateway ON devices (gateway_id) WHERE gateway_id IS NOT NULL;
