//! The report document parser on arbitrary bytes, plain and gzip-wrapped: it must return
//! `Ok` or a `ReportError`, never panic, and stay within its caps (small ones here, so the
//! fuzzer reaches them). The first byte picks the mode and the caps.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use marketsync::domain::HourWindow;
use marketsync::report::{read_vendor_sales_from, DocumentLimits};

/// 2025-12-09T00:00:00Z, six hours: the window the fuzzed documents are checked against.
const START: i64 = 1_765_238_400;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let limits = DocumentLimits {
        max_document_bytes: 64 * 1024,
        max_string_bytes: if mode & 2 == 0 { 64 } else { 4096 },
        max_number_bytes: if mode & 4 == 0 { 32 } else { 256 },
    };
    let window = HourWindow::new(START, START + 6 * 3600);
    let mut rows = 0u64;
    let on_row = |row: marketsync::domain::SalesRow| {
        assert!(window.contains_hour(row.hour_utc));
        assert!(row.asin.len() <= limits.max_string_bytes);
        rows += 1;
        Ok(())
    };
    let result = if mode & 1 == 0 {
        read_vendor_sales_from(body, false, window, limits, on_row)
    } else if mode & 8 == 0 {
        // Arbitrary bytes through the gzip decoder (mostly corrupt streams).
        read_vendor_sales_from(body, true, window, limits, on_row)
    } else {
        // The body gzip-wrapped, so the JSON side is reached through the decoder too.
        let mut encoder = flate2_encoder();
        let _ = encoder.write_all(body);
        let Ok(bytes) = encoder.finish() else { return };
        read_vendor_sales_from(&bytes[..], true, window, limits, on_row)
    };
    if let Ok(summary) = result {
        assert_eq!(summary.rows, rows);
    }
});

fn flate2_encoder() -> flate2::write::GzEncoder<Vec<u8>> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
}
