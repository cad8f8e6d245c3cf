//! SenML (RFC 8428) on arbitrary payloads: parse, resolve base fields, convert to readings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telemetry::{senml, DeviceId, EventTime};

fuzz_target!(|data: &[u8]| {
    let device = DeviceId::parse("fuzz-1").expect("a valid id");
    let now = EventTime::from_millis(1_764_000_000_000).expect("a valid time");
    if let Ok(records) = senml::parse(data) {
        if let Ok(resolved) = senml::resolve(&records, now) {
            let _ = senml::to_readings(resolved, &device);
        }
    }
    let _ = telemetry::decode(data, &device, now);
});
