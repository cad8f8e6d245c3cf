//! The telemetry decoder on arbitrary payloads (format detection, the compact JSON codec,
//! validation of times and values): it must return a value or an error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telemetry::{decode, DeviceId, EventTime};

fuzz_target!(|data: &[u8]| {
    let device = DeviceId::parse("fuzz-1").expect("a valid id");
    let now = EventTime::from_millis(1_764_000_000_000).expect("a valid time");
    let _ = decode(data, &device, now);
    // The same bytes wrapped as a compact message's readings exercise the reading paths.
    if let Ok(text) = std::str::from_utf8(data) {
        let wrapped = format!("{{\"seq\":1,\"ts\":1764000000000,\"readings\":[{text}]}}");
        let _ = decode(wrapped.as_bytes(), &device, now);
    }
});
