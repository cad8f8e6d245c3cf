//! The live websocket's client-message parser and subscription validation.
#![no_main]
use dashboard_api::live::{parse_client_message, parse_subscription, ClientMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ClientMessage::Subscribe { devices, metrics, segments, alerts, values }) = parse_client_message(text) {
        let _ = parse_subscription(devices, metrics, segments, alerts, values);
    }
});
