//! Turning one MQTT publish into readings and dead letters. Pure: no I/O, no clock reads.
//!
//! A message error (bad topic, unknown device, too large, not decodable) is one dead
//! letter for the message. A reading or SenML record refused inside a decodable message
//! is a dead letter of its own, whose detail starts with its index (`reading 3: …` in
//! compact JSON, `record 3: …` in SenML); the message's other readings are kept. The
//! first [`MAX_RECORD_LETTERS`] refused records get a letter each; the rest are folded
//! into one letter per reason, and [`Processed::folded`] keeps their count, so a pack of
//! thousands of bad records costs a bounded number of rows and is still counted in full.

use std::collections::{BTreeMap, HashSet};

use store::DeadLetter;
use telemetry::command::CommandAck;
use telemetry::{
    decode_status, DeviceId, EventTime, Format, Reading, StatusEvent, Topic, TopicKind, Validator,
};

use crate::config::UnknownDevicePolicy;

/// The outcome of one message.
#[derive(Debug, Default, PartialEq)]
pub struct Processed {
    pub readings: Vec<Reading>,
    pub dead_letters: Vec<DeadLetter>,
    /// A device seen for the first time (auto-registration).
    pub new_device: Option<DeviceId>,
    /// Refused records not in `dead_letters` of their own but folded into the letter of
    /// their reason, by reason: counters add these to the letters.
    pub folded: BTreeMap<String, u64>,
}

/// Refused readings or records of one message that get a dead letter each.
pub const MAX_RECORD_LETTERS: usize = 16;

/// Decode, validate and classify one telemetry message received at `now`.
pub fn process_publish(
    topic: &str,
    payload: &[u8],
    now: EventTime,
    validator: &Validator,
    known: &HashSet<DeviceId>,
    policy: UnknownDevicePolicy,
) -> Processed {
    let mut out = Processed::default();
    let letter = |device: Option<DeviceId>, reason: &str, detail: String| {
        let mut d = DeadLetter::new(topic, device, reason, detail, payload);
        d.received_at = now;
        d
    };
    let parsed = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            out.dead_letters.push(letter(None, "bad_topic", e.to_string()));
            return out;
        }
    };
    if parsed.kind != TopicKind::Telemetry {
        out.dead_letters.push(letter(
            Some(parsed.device),
            "wrong_topic",
            format!("ingest takes telemetry, not {}", parsed.kind.suffix()),
        ));
        return out;
    }
    let device = parsed.device;
    if !known.contains(&device) {
        match policy {
            UnknownDevicePolicy::Reject => {
                out.dead_letters.push(letter(
                    Some(device.clone()),
                    "unknown_device",
                    format!("device {device} is not registered"),
                ));
                return out;
            }
            UnknownDevicePolicy::AutoRegister => out.new_device = Some(device.clone()),
        }
    }
    match validator.check(payload, &device, now) {
        Err(e) => out.dead_letters.push(letter(Some(device), e.code(), e.to_string())),
        Ok(decoded) => {
            let what = match decoded.format {
                Format::Compact => "reading",
                Format::Senml => "record",
            };
            let mut rejected = decoded.rejected.into_iter();
            for r in rejected.by_ref().take(MAX_RECORD_LETTERS) {
                out.dead_letters.push(letter(
                    Some(device.clone()),
                    r.error.code(),
                    format!("{what} {}: {}", r.index, r.error),
                ));
            }
            // Beyond the limit, one letter per reason names the first record and the count.
            let mut rest = BTreeMap::new();
            for r in rejected {
                rest.entry(r.error.code()).or_insert_with(|| (r, 0)).1 += 1;
            }
            for (code, (first, n)) in rest {
                out.dead_letters.push(letter(
                    Some(device.clone()),
                    code,
                    format!(
                        "{n} more {what}s refused for this reason; the first is {what} {}: {}",
                        first.index, first.error
                    ),
                ));
                if n > 1 {
                    out.folded.insert(code.to_owned(), n - 1);
                }
            }
            out.readings = decoded.readings;
        }
    }
    out
}

/// Decode one status message (`sccr/v1/devices/{id}/status`) received at `now`; a bad one
/// becomes a dead letter with its reason (`bad_topic`, `bad_status`, `bad_timestamp`).
pub fn process_status(
    topic: &str,
    payload: &[u8],
    retained: bool,
    now: EventTime,
) -> Result<StatusEvent, Box<DeadLetter>> {
    let letter = |device: Option<DeviceId>, reason: &str, detail: String| {
        let mut d = DeadLetter::new(topic, device, reason, detail, payload);
        d.received_at = now;
        Box::new(d)
    };
    let parsed = Topic::parse(topic).map_err(|e| letter(None, "bad_topic", e.to_string()))?;
    if parsed.kind != TopicKind::Status {
        return Err(letter(
            Some(parsed.device),
            "wrong_topic",
            format!("expected a status topic, not {}", parsed.kind.suffix()),
        ));
    }
    match decode_status(payload) {
        Ok(m) => {
            Ok(StatusEvent { device: parsed.device, state: m.state, received_at: now, retained })
        }
        Err(e) => Err(letter(Some(parsed.device), e.code(), e.to_string())),
    }
}

/// Decode a device's answer to a command (`sccr/v1/devices/{id}/commands/ack`); a bad one
/// becomes a dead letter (`bad_topic`, `bad_command_ack`).
pub fn process_command_ack(
    topic: &str,
    payload: &[u8],
    now: EventTime,
) -> Result<(DeviceId, CommandAck), Box<DeadLetter>> {
    let letter = |device: Option<DeviceId>, reason: &str, detail: String| {
        let mut d = DeadLetter::new(topic, device, reason, detail, payload);
        d.received_at = now;
        Box::new(d)
    };
    let parsed = Topic::parse(topic).map_err(|e| letter(None, "bad_topic", e.to_string()))?;
    if parsed.kind != TopicKind::CommandAck {
        return Err(letter(
            Some(parsed.device),
            "wrong_topic",
            format!("expected a command ack topic, not {}", parsed.kind.suffix()),
        ));
    }
    match serde_json::from_slice::<CommandAck>(payload) {
        Ok(ack) if !ack.id.is_empty() && ack.id.len() <= 128 => Ok((parsed.device, ack)),
        Ok(_) => Err(letter(
            Some(parsed.device),
            "bad_command_ack",
            "command ack id must be 1 to 128 characters".into(),
        )),
        Err(e) => Err(letter(
            Some(parsed.device),
            "bad_command_ack",
            format!("command ack is not {{\"id\",\"result\",\"detail\"}}: {e}"),
        )),
    }
}

/// What a topic carries, if it is one ingest takes.
pub fn topic_kind(topic: &str) -> Option<TopicKind> {
    Topic::parse(topic).ok().map(|t| t.kind)
}

#[cfg(test)]
mod tests {
    use telemetry::{MetricId, ValidationConfig};

    use super::*;

    const NOW: EventTime = EventTime(1_763_892_000_000);

    fn known() -> HashSet<DeviceId> {
        [DeviceId::parse("loop-1").unwrap()].into()
    }

    fn run(topic: &str, payload: &[u8], policy: UnknownDevicePolicy) -> Processed {
        process_publish(
            topic,
            payload,
            NOW,
            &Validator::new(ValidationConfig::default()),
            &known(),
            policy,
        )
    }

    #[test]
    fn good_message_gives_readings() {
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            br#"{"seq":1,"ts":1763892000000,"readings":[{"m":"speed_kmh","v":40}]}"#,
            UnknownDevicePolicy::Reject,
        );
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.readings[0].metric, MetricId::SpeedKmh);
        assert!(p.dead_letters.is_empty());
        assert_eq!(p.new_device, None);
    }

    #[test]
    fn partly_bad_message_keeps_the_good_readings() {
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            br#"{"ts":1763892000000,"readings":[{"m":"speed_kmh","v":400},{"m":"vehicle_count","v":3}]}"#,
            UnknownDevicePolicy::Reject,
        );
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.dead_letters.len(), 1);
        assert_eq!(p.dead_letters[0].reason, "out_of_range");
        assert_eq!(p.dead_letters[0].detail, "reading 0: speed_kmh value 400 is outside 0..=250");
        assert_eq!(p.dead_letters[0].received_at, NOW);
    }

    #[test]
    fn senml_pack_with_one_bad_record_keeps_the_others() {
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            br#"[{"bn":"urn:dev:loop-1:","bt":1763891990},{"n":"speed_kmh","v":40},{"n":"speed_kmh","v":"fast","t":1},{"n":"vehicle_count","v":3,"t":2}]"#,
            UnknownDevicePolicy::Reject,
        );
        let got: Vec<_> = p.readings.iter().map(|r| (r.metric, r.value, r.time)).collect();
        assert_eq!(
            got,
            vec![
                (MetricId::SpeedKmh, 40.0, EventTime(1_763_891_990_000)),
                (MetricId::VehicleCount, 3.0, EventTime(1_763_891_992_000)),
            ]
        );
        let letters: Vec<_> =
            p.dead_letters.iter().map(|d| (d.reason.as_str(), d.detail.as_str())).collect();
        assert_eq!(letters, vec![("wrong_type", "record 2: field \"v\" must be a number")]);
        assert_eq!(p.dead_letters[0].device, Some(DeviceId::parse("loop-1").unwrap()));
        assert!(p.folded.is_empty());
    }

    #[test]
    fn compact_message_with_one_bad_reading_keeps_the_others() {
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            br#"{"ts":1763892000000,"readings":[{"m":"speed_kmh","v":40},{"m":"speed_kmh","v":"fast"}]}"#,
            UnknownDevicePolicy::Reject,
        );
        assert_eq!(p.readings.len(), 1);
        let letters: Vec<_> =
            p.dead_letters.iter().map(|d| (d.reason.as_str(), d.detail.as_str())).collect();
        assert_eq!(
            letters,
            vec![("wrong_type", "reading 1: field \"v\" must be a number or a boolean")]
        );
    }

    #[test]
    fn many_bad_records_fold_into_one_letter_per_reason_and_are_counted() {
        let mut records = vec![r#"{"bn":"urn:dev:loop-1:","bt":1763891990}"#.to_owned()];
        for i in 0..40 {
            records.push(format!(r#"{{"n":"speed_kmh","v":"x","t":{i}}}"#)); // wrong_type
            records.push(format!(r#"{{"n":"nope","v":1,"t":{i}}}"#)); // unknown_metric
        }
        records.push(r#"{"n":"speed_kmh","v":50}"#.to_owned());
        let payload = format!("[{}]", records.join(","));
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            payload.as_bytes(),
            UnknownDevicePolicy::Reject,
        );
        assert_eq!(p.readings.len(), 1);
        assert_eq!(p.dead_letters.len(), MAX_RECORD_LETTERS + 2);
        assert_eq!(p.dead_letters[0].detail, "record 1: field \"v\" must be a number");
        assert_eq!(p.dead_letters[1].detail, "record 2: unknown metric \"nope\"");
        let folded: Vec<_> = p.dead_letters[MAX_RECORD_LETTERS..]
            .iter()
            .map(|d| (d.reason.as_str(), d.detail.as_str()))
            .collect();
        assert_eq!(
            folded,
            vec![
                (
                    "unknown_metric",
                    "32 more records refused for this reason; the first is record 18: unknown metric \"nope\""
                ),
                (
                    "wrong_type",
                    "32 more records refused for this reason; the first is record 17: field \"v\" must be a number"
                ),
            ]
        );
        assert_eq!(
            p.folded,
            [("unknown_metric".to_owned(), 31), ("wrong_type".to_owned(), 31)].into()
        );
        // Letters plus folded records: every refused record counted once.
        let counted = p.dead_letters.len() as u64 + p.folded.values().sum::<u64>();
        assert_eq!(counted, 80);
    }

    #[test]
    fn a_full_size_pack_of_empty_records_costs_a_bounded_number_of_letters() {
        // The largest pack the validator takes, of the smallest bad records.
        let limit = ValidationConfig::default().max_payload_bytes;
        let n = (limit - 2) / 3;
        let payload = format!("[{}]", vec!["{}"; n].join(","));
        assert!(payload.len() <= limit);
        let p = run(
            "sccr/v1/devices/loop-1/telemetry",
            payload.as_bytes(),
            UnknownDevicePolicy::Reject,
        );
        assert_eq!(n, 21_844);
        assert_eq!(p.dead_letters.len(), MAX_RECORD_LETTERS + 1);
        assert!(p.dead_letters.iter().all(|d| d.reason == "bad_name"));
        assert_eq!(p.folded, [("bad_name".to_owned(), (n - MAX_RECORD_LETTERS - 1) as u64)].into());
        assert!(p.readings.is_empty());
    }

    #[test]
    fn malformed_message_is_one_dead_letter() {
        let p = run("sccr/v1/devices/loop-1/telemetry", b"{not json", UnknownDevicePolicy::Reject);
        assert!(p.readings.is_empty());
        assert_eq!(p.dead_letters.len(), 1);
        assert_eq!(p.dead_letters[0].reason, "bad_json");
        assert_eq!(p.dead_letters[0].payload, b"{not json");
    }

    #[test]
    fn bad_topics_and_unknown_devices() {
        let p = run("sccr/v1/devices/Bad/telemetry", b"{}", UnknownDevicePolicy::Reject);
        assert_eq!(p.dead_letters[0].reason, "bad_topic");
        assert_eq!(p.dead_letters[0].device, None);
        let body = br#"{"ts":1763892000000,"readings":[{"m":"speed_kmh","v":40}]}"#;
        let p = run("sccr/v1/devices/new-1/telemetry", body, UnknownDevicePolicy::Reject);
        assert_eq!(p.dead_letters[0].reason, "unknown_device");
        assert!(p.readings.is_empty());
        let p = run("sccr/v1/devices/new-1/telemetry", body, UnknownDevicePolicy::AutoRegister);
        assert_eq!(p.new_device, Some(DeviceId::parse("new-1").unwrap()));
        assert_eq!(p.readings.len(), 1);
    }

    #[test]
    fn status_messages_become_events_and_bad_ones_dead_letters() {
        let ev =
            process_status("sccr/v1/devices/loop-1/status", br#"{"state":"offline"}"#, true, NOW)
                .unwrap();
        assert_eq!(
            ev,
            StatusEvent {
                device: DeviceId::parse("loop-1").unwrap(),
                state: telemetry::DeviceState::Offline,
                received_at: NOW,
                retained: true
            }
        );
        let bad =
            process_status("sccr/v1/devices/loop-1/status", b"offline", false, NOW).unwrap_err();
        assert_eq!(
            (bad.reason.as_str(), bad.device.as_ref().map(|d| d.as_str())),
            ("bad_status", Some("loop-1"))
        );
        assert_eq!(bad.payload, b"offline");
        let wrong = process_status(
            "sccr/v1/devices/loop-1/telemetry",
            br#"{"state":"online"}"#,
            false,
            NOW,
        )
        .unwrap_err();
        assert_eq!(wrong.reason, "wrong_topic");
        assert_eq!(
            process_status("elsewhere/x", b"{}", false, NOW).unwrap_err().reason,
            "bad_topic"
        );
    }

    #[test]
    fn command_acks_are_decoded_and_bad_ones_dead_letters() {
        let (device, ack) = process_command_ack(
            "sccr/v1/devices/loop-1/commands/ack",
            br#"{"id":"c1","result":"rejected","detail":"expired"}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(device.as_str(), "loop-1");
        assert_eq!(ack, CommandAck::rejected("c1", "expired"));
        let bad = process_command_ack(
            "sccr/v1/devices/loop-1/commands/ack",
            br#"{"id":"c1","result":"maybe"}"#,
            NOW,
        )
        .unwrap_err();
        assert_eq!(bad.reason, "bad_command_ack");
        assert_eq!(
            process_command_ack("sccr/v1/devices/loop-1/status", b"{}", NOW).unwrap_err().reason,
            "wrong_topic"
        );
    }
}
