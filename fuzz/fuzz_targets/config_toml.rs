//! `sccr`'s configuration parser (TOML, environment overrides, validation). The binary
//! crate has no library target, so its config module is compiled in here as is.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../sccr/src/config/mod.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first line, when it looks like one, is an environment override.
    let (env, toml) = match text.split_once('\n') {
        Some((first, rest)) if first.starts_with("SCCR_") => match first.split_once('=') {
            Some((k, v)) => (vec![(k.to_owned(), v.to_owned())], rest),
            None => (Vec::new(), text),
        },
        _ => (Vec::new(), text),
    };
    let _ = config::Config::from_toml(toml, env);
});
