//! Arbitrary header values into the header parsers every provider answer goes through:
//! `Retry-After` (seconds, fractions, exponents, HTTP dates, garbage) must give no wait or
//! a wait of at most a day, and `x-amzn-RateLimit-Limit` no rate or a finite positive one;
//! never a panic, whatever `now` is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (clock, value) = data.split_at(8);
    let now = i64::from_le_bytes(clock.try_into().unwrap_or([0; 8]));
    if let Ok(text) = std::str::from_utf8(value) {
        if let Some((wait, _clamped)) = marketsync::provider::parse_retry_after(text, now) {
            assert!(wait <= std::time::Duration::from_secs(24 * 3600), "{text:?} -> {wait:?}");
        }
    }
    if let Ok(header) = HeaderValue::from_bytes(value) {
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-ratelimit-limit", header);
        if let Some(rate) = marketsync::provider::rate_limit(&headers) {
            assert!(rate.is_finite() && rate > 0.0, "{rate}");
        }
    }
});
