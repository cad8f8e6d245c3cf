//! The objects of operation and administration: dead letters, device commands, webhook
//! subscriptions and deliveries, API tokens, the audit log.

use serde_json::{json, Value};

use super::*;
use crate::openapi::device_id;

pub(super) fn dead_letter() -> Value {
    example(
        record_in(
            &[
                "id",
                "received_at",
                "topic",
                "device",
                "reason",
                "detail",
                "payload_size",
                "payload_preview",
            ],
            json!({
                "id": whole("Entry id"),
                "received_at": ms("When ingest received it"),
                "topic": text("The MQTT topic"),
                "device": text_or_null("The device the topic names, or null"),
                "reason": text("The dead-letter reason (see the MQTT contract)"),
                "detail": text("What was wrong; a refused record's detail starts with its index"),
                "payload_size": count("The payload's size in bytes"),
                "payload_preview": text("The payload's first 512 bytes as text"),
            }),
        ),
        json!({"id": 9001, "received_at": T0, "topic": format!("sccr/v1/devices/{DEVICE}/telemetry"),
            "device": DEVICE, "reason": "out_of_range", "detail": "reading 0: speed_kmh value 400 is outside 0..=250",
            "payload_size": 54, "payload_preview": "{\"ts\":1763892000000,\"readings\":[{\"m\":\"speed_kmh\",\"v\":400}]}"}),
    )
}

pub(super) fn command() -> Value {
    let statuses = ["pending", "sent", "acked", "rejected", "failed", "expired"];
    example(
        record_in(
            &[
                "id",
                "device",
                "name",
                "args",
                "status",
                "detail",
                "idempotency_key",
                "created_by",
                "created_at",
                "sent_at",
                "expires_at",
                "finished_at",
            ],
            json!({
                "id": text("The command's UUID, sent to the device"),
                "device": described(device_id(), "The device"),
                "name": text("What to do"),
                "args": crate::openapi::command_args(),
                "status": described(enumeration(&statuses), "pending → sent (the broker took it) → acked, rejected or failed (the device's answer), or expired"),
                "detail": text_or_null("The device's detail, or why it failed or expired"),
                "idempotency_key": text_or_null("The Idempotency-Key it was sent with"),
                "created_by": text_or_null("Who sent it"),
                "created_at": ms("When it was stored"),
                "sent_at": ms_or_null("When the broker took it"),
                "expires_at": ms("When it expires unanswered"),
                "finished_at": ms_or_null("When it reached a final status"),
            }),
        ),
        command_example(),
    )
}

pub(super) fn webhook() -> Value {
    example(
        record_in(
            &["id", "url", "types", "enabled", "format", "created_at"],
            json!({
                "id": whole("Subscription id"),
                "url": text("The receiver"),
                "types": list(json!({"type": "string"}), "Event types or prefixes ending in *; empty: all"),
                "enabled": flag("Whether deliveries are made"),
                "format": described(enumeration(&["cloudevents", "ngsi-ld"]), "The payload shape"),
                "created_at": ms("When it was created"),
            }),
        ),
        webhook_example(),
    )
}

pub(super) fn delivery() -> Value {
    example(
        record_in(
            &[
                "webhook",
                "event",
                "type",
                "subject",
                "state",
                "attempts",
                "next_attempt_at",
                "last_status",
                "last_error",
                "delivered_at",
            ],
            json!({
                "webhook": whole("The subscription"),
                "event": whole("The event's id (the CloudEvents id)"),
                "type": text("The event type"),
                "subject": text("What the event is about (alert/42, command/…)"),
                "state": enumeration(&["pending", "delivered", "dead"]),
                "attempts": count("Attempts made"),
                "next_attempt_at": ms("When the next attempt is due"),
                "last_status": json!({"type": ["integer", "null"], "description": "The receiver's last HTTP status, or null"}),
                "last_error": text_or_null("The last failure, or null"),
                "delivered_at": ms_or_null("When it was delivered"),
            }),
        ),
        json!({"webhook": 3, "event": 1204, "type": "it.firenze.sccr.alert.raised", "subject": "alert/42",
            "state": "delivered", "attempts": 1, "next_attempt_at": T0, "last_status": 204, "last_error": null,
            "delivered_at": T0 + 120}),
    )
}

pub(super) fn token() -> Value {
    example(
        record_in(
            &["id", "name", "role", "created_at", "revoked_at"],
            json!({
                "id": whole("Token id"),
                "name": text("Who or what uses it (the operator's name in alert events)"),
                "role": enumeration(&["admin", "operator", "planner", "device"]),
                "created_at": ms("When it was created"),
                "revoked_at": ms_or_null("When it was revoked"),
            }),
        ),
        json!({"id": 5, "name": "wall-3", "role": "operator", "created_at": T0, "revoked_at": null}),
    )
}

pub(super) fn audit_entry() -> Value {
    example(
        record_in(
            &["id", "at", "actor", "role", "action", "target", "detail"],
            json!({
                "id": whole("Entry id"),
                "at": ms("When"),
                "actor": text("The token's name"),
                "role": text("The token's role"),
                "action": text("What was done (device.register, alert.shelve, token.revoke, …)"),
                "target": text("What it was done to (device/loop-12, token/5, …)"),
                "detail": {"description": "The action's details"},
            }),
        ),
        json!({"id": 77, "at": T0, "actor": "admin", "role": "admin", "action": "device.register",
            "target": format!("device/{DEVICE}"), "detail": {"kind": "traffic_loop", "segment": SEGMENT, "gateway": null}}),
    )
}
