//! CloudEvents 1.0 in structured JSON mode (`application/cloudevents+json`): the outbox
//! row becomes the event, its id (as a string) the event `id`, stable across retries and
//! redeliveries so receivers can drop duplicates.
//!
//! ```json
//! {"specversion":"1.0","id":"42","source":"urn:sccr:firenze","type":"it.firenze.sccr.alert.raised",
//!  "subject":"alert/7","time":"2026-11-25T10:00:00.000Z","datacontenttype":"application/json","data":{…}}
//! ```
//! With the `ngsi-ld` format, alert events carry a FIWARE `Alert` entity as `data`
//! (`datacontenttype` `application/ld+json`); other events keep their JSON.

use serde_json::{json, Value};
use store::{OutboxRecord, WebhookFormat};

use crate::ngsi;

pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The structured CloudEvent of an outbox event.
pub fn event(record: &OutboxRecord, source: &str, format: WebhookFormat) -> Value {
    let (content_type, data) = match format {
        WebhookFormat::NgsiLd => match ngsi::entity_of_event(record) {
            Some(entity) => ("application/ld+json", entity),
            None => ("application/json", record.data.clone()),
        },
        WebhookFormat::CloudEvents => ("application/json", record.data.clone()),
    };
    json!({
        "specversion": "1.0",
        "id": record.id.to_string(),
        "source": source,
        "type": record.event_type,
        "subject": record.subject,
        "time": record.time.to_rfc3339(),
        "datacontenttype": content_type,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use telemetry::EventTime;

    use super::*;

    #[test]
    fn an_outbox_row_becomes_a_structured_cloudevent() {
        let r = OutboxRecord {
            id: 42,
            event_type: "it.firenze.sccr.device.offline".into(),
            subject: "device/loop-1".into(),
            time: EventTime(1_764_064_800_000),
            data: json!({"device": "loop-1", "state": "offline"}),
        };
        let e = event(&r, "urn:sccr:firenze", WebhookFormat::CloudEvents);
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "42");
        assert_eq!(e["type"], "it.firenze.sccr.device.offline");
        assert_eq!(e["subject"], "device/loop-1");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["state"], "offline");
        assert!(EventTime::parse_rfc3339(e["time"].as_str().unwrap()).is_ok());
        // Every REQUIRED context attribute of CloudEvents 1.0 is a non-empty string.
        for k in ["id", "source", "specversion", "type"] {
            assert!(!e[k].as_str().unwrap().is_empty(), "{k}");
        }
    }
}
