//! The live websocket's client-message parser (what the session reads every frame with).
#![no_main]
use dashboard_api::live::parse_client_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_client_message(text);
});
