//! The alert and its lifecycle events.

use serde_json::{json, Value};
use telemetry::alert::{AlertKind, AlertMove, AlertState, Severity, MESSAGE_CODES};

use super::*;
use crate::openapi::{device_id, segment_id};

pub(super) fn alert() -> Value {
    let states = names(&AlertState::ALL, AlertState::as_str);
    let codes: Vec<&str> = MESSAGE_CODES.iter().map(|m| m.code.as_str()).collect();
    let who = |by_null: bool| {
        record_in(
            &["by", "note", "at"],
            json!({
                "by": if by_null { text_or_null("The operator; null when the engine cleared it") } else { text("The operator (the token's name)") },
                "note": text_or_null("The operator's note"),
                "at": ms("When"),
            }),
        )
    };
    example(
        record_in(
            &[
                "id",
                "rule",
                "subject",
                "kind",
                "severity",
                "state",
                "active",
                "message",
                "code",
                "params",
                "value",
                "since",
                "raised_at",
                "returned_at",
                "acknowledged",
                "cleared",
                "shelved",
                "suppressed",
                "members",
            ],
            json!({
                "id": whole("The store's id"),
                "rule": text("The rule's id"),
                "subject": {"description": "What it is about", "oneOf": [
                    object(&["device"], json!({"device": device_id()})),
                    object(&["segment"], json!({"segment": segment_id()})),
                    {"const": "rule", "description": "The rule as a whole (rate-limit overflow)"},
                ]},
                "kind": described(enumeration(&names(&AlertKind::ALL, AlertKind::as_str)), "single; segment_group (devices of a segment folded); rate_limit_overflow (raises over the rule's rate limit folded)"),
                "severity": described(enumeration(&names(&Severity::ALL, Severity::as_str)), "How urgent"),
                "state": described(enumeration(&states), "Where it stands in its lifecycle (see the alert lifecycle)"),
                "active": flag("Whether the condition still holds"),
                "message": text("English text, for webhooks and logs; screens render code and params"),
                "code": described(enumeration(&codes), "The message template (GET /api/v1/catalogue lists each with its params)"),
                "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]}, "description": "The template's values, flat, numbers as numbers"},
                "value": number_or_null("The value that raised it, or null"),
                "since": ms("When the condition began"),
                "raised_at": ms("When it was raised (the first raise)"),
                "returned_at": ms_or_null("When the condition ended"),
                "acknowledged": described(or_null(who(false)), "Who acknowledged it, when and why; null until acknowledged"),
                "cleared": described(or_null(who(true)), "Who cleared it, when and why; null while open"),
                "shelved": described(or_null(record_in(&["by", "reason", "at", "until"], json!({
                    "by": text("The operator"), "reason": text("Why"), "at": ms("When shelved"), "until": ms("When the shelf ends")}))), "The shelf it is on, or null: a shelved alert signals nothing"),
                "suppressed": described(or_null(record_in(&["reason", "by_alert"], json!({
                    "reason": enumeration(&["suppressed_by_rule", "device_offline"]),
                    "by_alert": json!({"type": ["integer", "null"], "description": "The suppressing alert's id, where known"})}))), "Why it is suppressed by design, or null"),
                "members": count("Subjects folded into it (1 for a single alert)"),
            }),
        ),
        alert_example(),
    )
}

pub(super) fn alert_event() -> Value {
    let states = names(&AlertState::ALL, AlertState::as_str);
    let nullable_state = json!({"type": ["string", "null"], "enum": states.iter().map(|s| json!(s)).chain([Value::Null]).collect::<Vec<_>>(), "description": "The state before; null for the raise"});
    let moves: Vec<Value> =
        AlertMove::ALL.iter().map(|m| json!(m.as_str())).chain([Value::Null]).collect();
    example(
        record_in(
            &["id", "alert", "from", "to", "action", "by", "note", "at"],
            json!({
                "id": whole("Event id"),
                "alert": whole("The alert's id"),
                "from": nullable_state,
                "to": described(enumeration(&states), "The state after"),
                "action": {"type": ["string", "null"], "enum": moves, "description": "The move; null for the raise"},
                "by": text_or_null("The operator; null for the engine's moves"),
                "note": text_or_null("The operator's note, or the engine's (\"shelf expired\")"),
                "at": ms("When"),
            }),
        ),
        alert_event_example(),
    )
}
