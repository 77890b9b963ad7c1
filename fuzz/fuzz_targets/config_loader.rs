//! Arbitrary bytes into the configuration loader: `Config::parse` must answer `Ok` or a
//! `ConfigError` naming the key, and never panic (slicing, arithmetic on durations and
//! counts, line numbers of spans).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads UTF-8 text (`read_to_string`); other bytes never reach it.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(err) = marketsync::config::Config::parse(text, "fuzz.toml") {
            let message = err.to_string();
            assert!(message.starts_with("fuzz.toml: "), "{message}");
        }
    }
});
