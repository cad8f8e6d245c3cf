//! Detector health: a device's data-quality score and flags, and the list for planners.

use super::*;

fn flag_name() -> Value {
    described(
        enumeration(&telemetry::health::HealthFlag::ALL.map(telemetry::health::HealthFlag::as_str)),
        "stuck, zero_busy, missing or implausible",
    )
}

fn interval() -> Value {
    object(
        &["flag", "rule", "from", "to"],
        json!({
            "flag": flag_name(),
            "rule": text("The health rule that raised it"),
            "from": ms("Start of the flagged data"),
            "to": ms_or_null("End of the flagged data, exclusive; null while the flag holds"),
        }),
    )
}

fn score() -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 1, "description": "Data-quality score: the share of the window without a flag, each instant weighted by its heaviest flag (stuck, zero_busy, implausible 1, missing 0.5); 1 without flags"})
}

pub fn device_quality() -> Value {
    example(
        object(
            &["device", "kind", "segment", "from", "to", "score", "active", "flags"],
            json!({
                "device": text("The device"),
                "kind": text_or_null("Its kind"),
                "segment": text_or_null("Its road segment"),
                "from": ms("Start of the window scored"),
                "to": ms("End of the window scored, exclusive (now)"),
                "score": score(),
                "active": list(flag_name(), "Flags holding now"),
                "flags": list(interval(), "Flag intervals overlapping the window, oldest first"),
            }),
        ),
        json!({"device": DEVICE, "kind": "traffic_loop", "segment": SEGMENT, "from": T0, "to": T0 + 86_400_000,
            "score": 0.9375, "active": ["stuck"],
            "flags": [{"flag": "stuck", "rule": "loop-stuck", "from": T0 + 81_000_000, "to": null}]}),
    )
}

pub fn quality_list() -> Value {
    let row = object(
        &["device", "kind", "segment", "score", "active", "flagged_ms"],
        json!({
            "device": text("The device"),
            "kind": text_or_null("Its kind"),
            "segment": text_or_null("Its road segment"),
            "score": score(),
            "active": list(flag_name(), "Flags holding now"),
            "flagged_ms": count("Milliseconds of the window under any flag"),
        }),
    );
    example(
        object(
            &["from", "to", "total", "devices"],
            json!({
                "from": ms("Start of the window scored"),
                "to": ms("End of the window scored, exclusive (now)"),
                "total": count("Devices matching the filters (before limit)"),
                "devices": list(row, "Worst score first, then by id"),
            }),
        ),
        json!({"from": T0, "to": T0 + 86_400_000, "total": 2, "devices": [
            {"device": DEVICE, "kind": "traffic_loop", "segment": SEGMENT, "score": 0.9375, "active": ["stuck"], "flagged_ms": 5_400_000},
            {"device": "loop-viale-strozzi-1", "kind": "traffic_loop", "segment": SEGMENT, "score": 1.0, "active": [], "flagged_ms": 0}]}),
    )
}
