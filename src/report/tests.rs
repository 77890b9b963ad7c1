//! Tests of the report document parser: gzip and plain documents, key order, truncation,
//! malformed JSON, mistyped fields, window mismatches, partial hours and error documents.

use super::validate::parse_time;
use super::*;
use crate::domain::{format_ts, parse_ts, HOUR};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;

const START: i64 = 1_765_238_400; // 2025-12-09T00:00:00Z

fn window() -> HourWindow {
    HourWindow::new(START, START + 6 * HOUR)
}

fn spec_json(start: i64, end: i64) -> String {
    format!(
        r#"{{"reportType":"GET_VENDOR_REAL_TIME_SALES_REPORT","reportOptions":{{"currencyCode":"USD"}},"dataStartTime":"{}","dataEndTime":"{}","marketplaceIds":["ATVPDKIKX0DER"]}}"#,
        format_ts(start),
        format_ts(end)
    )
}

fn row_json(start: i64, end: i64, asin: &str, units: i64, revenue: f64) -> String {
    format!(
        r#"{{"startTime":"{}","endTime":"{}","asin":"{asin}","orderedUnits":{units},"orderedRevenue":{revenue},"extra":[1,{{"a":2}}]}}"#,
        format_ts(start),
        format_ts(end)
    )
}

fn document(spec_first: bool, spec: &str, rows: &[String]) -> String {
    let data = format!(r#""reportData":[{}]"#, rows.join(","));
    let spec = format!(r#""reportSpecification":{spec}"#);
    if spec_first {
        format!("{{{spec},\n{data}}}\n")
    } else {
        format!("{{{data},\n\"unknown\":null,{spec}}}")
    }
}

fn good_rows() -> Vec<String> {
    vec![
        row_json(START, START + HOUR, "B000000001", 3, 59.97),
        row_json(START + HOUR, START + 2 * HOUR, "B000000002", -1, -19.99),
        row_json(START + 5 * HOUR, START + 6 * HOUR, "B000000001", 2, 40.0),
    ]
}

fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn read(path: &Path, gzip: bool) -> (Result<ReportSummary, ReportError>, Vec<SalesRow>) {
    let mut rows = Vec::new();
    let result = read_vendor_sales_document(path, gzip, window(), |row| {
        rows.push(row);
        Ok(())
    });
    (result, rows)
}

fn expected_rows() -> Vec<SalesRow> {
    vec![
        SalesRow {
            hour_utc: START,
            asin: "B000000001".into(),
            ordered_units: 3,
            ordered_revenue: 59.97,
        },
        SalesRow {
            hour_utc: START + HOUR,
            asin: "B000000002".into(),
            ordered_units: -1,
            ordered_revenue: -19.99,
        },
        SalesRow {
            hour_utc: START + 5 * HOUR,
            asin: "B000000001".into(),
            ordered_units: 2,
            ordered_revenue: 40.0,
        },
    ]
}

#[test]
fn reads_gzip_and_plain_documents() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    for (path, gz) in [
        (write_file(&dir, "doc.json.gz", &gzip(&text)), true),
        (write_file(&dir, "doc.json", text.as_bytes()), false),
    ] {
        let (result, rows) = read(&path, gz);
        let summary = result.unwrap();
        assert_eq!(
            summary,
            ReportSummary {
                data_start: Some(START),
                data_end: Some(START + 6 * HOUR),
                rows: 3,
                skipped_partial: 0
            }
        );
        assert_eq!(rows, expected_rows());
    }
}

#[test]
fn spec_after_data_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(false, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "doc.json.gz", &gzip(&text));
    let (result, rows) = read(&path, true);
    assert_eq!(result.unwrap().rows, 3);
    assert_eq!(rows, expected_rows());
}

#[test]
fn negative_units_and_integer_revenue() {
    let dir = tempfile::tempdir().unwrap();
    let row = r#"{"asin":"B1","orderedRevenue":-5,"orderedUnits":-7,"endTime":"2025-12-09T03:00:00Z","startTime":"2025-12-09T02:00:00+00:00"}"#;
    let text = document(
        true,
        &spec_json(START, START + 6 * HOUR),
        &[row.to_string()],
    );
    let path = write_file(&dir, "doc.json", text.as_bytes());
    let (result, rows) = read(&path, false);
    assert_eq!(result.unwrap().rows, 1);
    assert_eq!(
        rows,
        vec![SalesRow {
            hour_utc: START + 2 * HOUR,
            asin: "B1".into(),
            ordered_units: -7,
            ordered_revenue: -5.0
        }]
    );
}

#[test]
fn truncated_gzip_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    let bytes = gzip(&text);
    // Cut in the middle of the deflate stream, and just before the trailer.
    for cut in [bytes.len() / 2, bytes.len() - 4, 5] {
        let path = write_file(&dir, "cut.json.gz", &bytes[..cut]);
        let (result, _) = read(&path, true);
        match result {
            Err(ReportError::Truncated(message)) => assert!(!message.is_empty()),
            other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn truncated_plain_json_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "cut.json", &text.as_bytes()[..text.len() / 2]);
    let (result, _) = read(&path, false);
    assert!(
        matches!(result, Err(ReportError::Truncated(_))),
        "{result:?}"
    );
    let err = result.unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn malformed_json_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        r#"{"reportSpecification": {], "reportData": []}"#.to_string(),
        document(true, &spec_json(START, START + 6 * HOUR), &good_rows()) + "garbage",
        r#"[1, 2, 3]"#.to_string(),
        "not json at all".to_string(),
    ];
    for (i, text) in cases.iter().enumerate() {
        let path = write_file(&dir, &format!("bad{i}.json.gz"), &gzip(text));
        let (result, _) = read(&path, true);
        match result {
            Err(err @ ReportError::Malformed(_)) => {
                assert!(err.to_string().contains("malformed"))
            }
            other => panic!("case {i}: expected Malformed, got {other:?}"),
        }
    }
    // A corrupt gzip stream (not gzip at all) is malformed too.
    let path = write_file(&dir, "plain-as-gzip.json.gz", b"{\"reportData\":[]}");
    let (result, _) = read(&path, true);
    assert!(
        matches!(result, Err(ReportError::Malformed(_))),
        "{result:?}"
    );
}

#[test]
fn rows_with_missing_or_mistyped_fields_name_field_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = row_json(START, START + HOUR, "B1", 1, 1.0);
    let cases = [
        (
            r#"{"startTime":"2025-12-09T01:00:00Z","endTime":"2025-12-09T02:00:00Z","asin":"B1","orderedRevenue":1.0}"#,
            "orderedUnits",
        ),
        (
            r#"{"startTime":"2025-12-09T01:00:00Z","endTime":"2025-12-09T02:00:00Z","asin":"B1","orderedUnits":1.5,"orderedRevenue":1.0}"#,
            "orderedUnits",
        ),
        (
            r#"{"startTime":"2025-12-09T01:00:00Z","endTime":"2025-12-09T02:00:00Z","asin":7,"orderedUnits":1,"orderedRevenue":1.0}"#,
            "asin",
        ),
        (
            r#"{"startTime":"yesterday","endTime":"2025-12-09T02:00:00Z","asin":"B1","orderedUnits":1,"orderedRevenue":1.0}"#,
            "startTime",
        ),
        (
            r#"{"startTime":"2025-12-09T01:00:00Z","endTime":"2025-12-09T02:00:00Z","asin":"B1","orderedUnits":1,"orderedRevenue":"1.0"}"#,
            "orderedRevenue",
        ),
        (r#""not a row""#, "row 1"),
    ];
    for (i, (row, field)) in cases.iter().enumerate() {
        let text = document(
            true,
            &spec_json(START, START + 6 * HOUR),
            &[good.clone(), row.to_string()],
        );
        let path = write_file(&dir, &format!("row{i}.json"), text.as_bytes());
        let (result, _) = read(&path, false);
        match result {
            Err(ReportError::Malformed(message)) => {
                assert!(message.contains(field), "case {i}: {message}");
                assert!(message.contains("row 1"), "case {i}: {message}");
            }
            other => panic!("case {i}: expected Malformed, got {other:?}"),
        }
    }
}

#[test]
fn window_mismatch_in_either_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let rows = good_rows();
    for spec_first in [true, false] {
        let text = document(
            spec_first,
            &spec_json(START - HOUR, START + 6 * HOUR),
            &rows,
        );
        let path = write_file(&dir, "doc.json.gz", &gzip(&text));
        let (result, delivered) = read(&path, true);
        match result {
            Err(err @ ReportError::WindowMismatch(_)) => {
                assert!(err.to_string().contains("window"))
            }
            other => panic!("spec_first {spec_first}: expected WindowMismatch, got {other:?}"),
        }
        if spec_first {
            assert!(
                delivered.is_empty(),
                "no rows handed out before the spec is checked"
            );
        }
    }
}

#[test]
fn row_outside_the_window_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = good_rows();
    rows.push(row_json(START + 6 * HOUR, START + 7 * HOUR, "B1", 1, 1.0));
    let text = document(false, &spec_json(START, START + 6 * HOUR), &rows);
    let path = write_file(&dir, "doc.json", text.as_bytes());
    let (result, _) = read(&path, false);
    assert!(
        matches!(result, Err(ReportError::WindowMismatch(ref m)) if m.contains("row 3")),
        "{result:?}"
    );
}

#[test]
fn partial_hour_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = good_rows();
    rows.insert(
        1,
        row_json(START + 2 * HOUR, START + 2 * HOUR + 1800, "B1", 1, 1.0),
    );
    rows.push(row_json(
        START + 3 * HOUR + 900,
        START + 4 * HOUR + 900,
        "B1",
        1,
        1.0,
    ));
    let text = document(true, &spec_json(START, START + 6 * HOUR), &rows);
    let path = write_file(&dir, "doc.json", text.as_bytes());
    let (result, delivered) = read(&path, false);
    let summary = result.unwrap();
    assert_eq!(summary.rows, 3);
    assert_eq!(summary.skipped_partial, 2);
    assert_eq!(delivered, expected_rows());
}

#[test]
fn missing_sections_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let no_spec = r#"{"reportData":[]}"#;
    let no_data = format!(
        r#"{{"reportSpecification":{}}}"#,
        spec_json(START, START + 6 * HOUR)
    );
    for (i, text) in [no_spec.to_string(), no_data].iter().enumerate() {
        let path = write_file(&dir, &format!("doc{i}.json"), text.as_bytes());
        let (result, _) = read(&path, false);
        assert!(
            matches!(result, Err(ReportError::Malformed(_))),
            "case {i}: {result:?}"
        );
    }
}

#[test]
fn callback_error_aborts_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "doc.json.gz", &gzip(&text));
    let mut seen = 0;
    let result = read_vendor_sales_document(&path, true, window(), |_| {
        seen += 1;
        if seen == 2 {
            Err(ReportError::Io(std::io::Error::other("store write failed")))
        } else {
            Ok(())
        }
    });
    assert_eq!(seen, 2, "parsing stopped at the failing row");
    match result {
        Err(ReportError::Io(err)) => assert_eq!(err.to_string(), "store write failed"),
        other => panic!("expected the callback's error, got {other:?}"),
    }
}

#[test]
fn empty_report_data_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(false, &spec_json(START, START + 6 * HOUR), &[]);
    let path = write_file(&dir, "doc.json", text.as_bytes());
    let (result, rows) = read(&path, false);
    assert_eq!(result.unwrap().rows, 0);
    assert!(rows.is_empty());
}

#[test]
fn fast_timestamp_path_agrees_with_parse_ts() {
    for text in [
        "2025-12-09T00:00:00Z",
        "2024-02-29T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2025-12-09T01:00:00+01:00",
        "2025-12-09T00:00:00.000Z",
        "2025-02-30T00:00:00Z",
        "2025-12-09T24:00:00Z",
        "2025-12-09 00:00:00Z",
        "+025-12-09T00:00:00Z",
        "yesterday",
    ] {
        assert_eq!(parse_time(text), parse_ts(text), "{text}");
    }
    assert_eq!(parse_time("2025-12-09T00:00:00Z"), Some(START));
}

#[test]
fn error_document_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        &dir,
        "err.json.gz",
        &gzip(r#"{"errorDetails":"Report generation failed."}"#),
    );
    assert_eq!(
        read_error_document(&path, true).unwrap(),
        "Report generation failed."
    );
    let path = write_file(&dir, "err.txt", b"  something else entirely \n");
    assert_eq!(
        read_error_document(&path, false).unwrap(),
        "something else entirely"
    );
    let long = "x".repeat(10_000);
    let path = write_file(&dir, "long.txt", long.as_bytes());
    assert_eq!(
        read_error_document(&path, false).unwrap().chars().count(),
        MAX_ERROR_TEXT + 1
    );
    let bytes = gzip(r#"{"errorDetails":"Report generation failed."}"#);
    let path = write_file(&dir, "cut.json.gz", &bytes[..bytes.len() / 2]);
    assert!(matches!(
        read_error_document(&path, true),
        Err(ReportError::Truncated(_))
    ));
}

// Size caps (issue 13): the decompressed size, one string, one number.

/// A gzip of `prefix`, `count` copies of `fill`, then `suffix`, compressed as it streams.
fn gzip_stretched(prefix: &str, fill: u8, count: usize, suffix: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(prefix.as_bytes()).unwrap();
    let block = vec![fill; 1024 * 1024];
    let mut left = count;
    while left > 0 {
        let take = left.min(block.len());
        encoder.write_all(&block[..take]).unwrap();
        left -= take;
    }
    encoder.write_all(suffix.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn read_limited(
    path: &Path,
    gzip: bool,
    limits: DocumentLimits,
) -> (Result<ReportSummary, ReportError>, Vec<SalesRow>) {
    let mut rows = Vec::new();
    let result = read_vendor_sales_document_with(path, gzip, window(), limits, |row| {
        rows.push(row);
        Ok(())
    });
    (result, rows)
}

#[test]
fn gzip_bomb_fails_at_the_decompressed_cap_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!(
        r#"{{"reportSpecification":{},"reportData":[{},"#,
        spec_json(START, START + 6 * HOUR),
        good_rows()[0]
    );
    // 64 MiB of whitespace in ~300 KiB of gzip, against a 1 MiB cap.
    let bytes = gzip_stretched(&prefix, b' ', 64 * 1024 * 1024, "]}");
    assert!(bytes.len() < 1024 * 1024, "bomb is {} bytes", bytes.len());
    let path = write_file(&dir, "bomb.json.gz", &bytes);
    let (result, _rows) = read_limited(&path, true, DocumentLimits::new(1024 * 1024));
    match result {
        Err(err @ ReportError::TooLarge(LimitExceeded::Document { cap: 1_048_576 })) => {
            let text = err.to_string();
            assert!(text.contains("max_document_bytes = 1048576"), "{text}");
        }
        other => panic!("expected the decompressed cap, got {other:?}"),
    }
}

#[test]
fn document_of_exactly_the_cap_is_read_and_one_byte_less_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "exact.json.gz", &gzip(&text));
    let size = text.len() as u64;
    let (result, rows) = read_limited(&path, true, DocumentLimits::new(size));
    assert_eq!(result.unwrap().rows, 3);
    assert_eq!(rows, expected_rows());
    let (result, _) = read_limited(&path, true, DocumentLimits::new(size - 1));
    assert!(
        matches!(
            result,
            Err(ReportError::TooLarge(LimitExceeded::Document { .. }))
        ),
        "{result:?}"
    );
    // Plain (not gzip) documents are counted the same way.
    let plain = write_file(&dir, "exact.json", text.as_bytes());
    let (result, _) = read_limited(&plain, false, DocumentLimits::new(size - 1));
    assert!(
        matches!(result, Err(ReportError::TooLarge(_))),
        "{result:?}"
    );
}

#[test]
fn huge_string_fails_at_the_field_cap_without_reading_on() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!(
        r#"{{"reportSpecification":{},"reportData":[{{"startTime":"{}","endTime":"{}","asin":""#,
        spec_json(START, START + 6 * HOUR),
        format_ts(START),
        format_ts(START + HOUR)
    );
    // A 256 MiB ASIN (the issue's case was 512 MiB pushing RSS to 1 GB).
    let bytes = gzip_stretched(&prefix, b'A', 256 * 1024 * 1024, r#""}]}"#);
    let path = write_file(&dir, "huge.json.gz", &bytes);
    let started = std::time::Instant::now();
    let (result, rows) = read_limited(&path, true, DocumentLimits::default());
    assert!(rows.is_empty());
    match result {
        Err(err @ ReportError::TooLarge(LimitExceeded::String { cap, offset })) => {
            assert_eq!(cap, MAX_STRING_BYTES);
            assert!(
                offset < 2 * MAX_STRING_BYTES as u64 + 1024,
                "offset {offset}"
            );
            assert!(err.to_string().contains("65536-byte cap"), "{err}");
        }
        other => panic!("expected the string cap, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "failed fast: {:?}",
        started.elapsed()
    );
}

#[test]
fn huge_key_and_huge_number_fail_at_their_caps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_json(START, START + 6 * HOUR);
    let key = format!(
        r#"{{"{}":1,"reportSpecification":{spec},"reportData":[]}}"#,
        "k".repeat(MAX_STRING_BYTES + 1)
    );
    let path = write_file(&dir, "key.json", key.as_bytes());
    let (result, _) = read_limited(&path, false, DocumentLimits::default());
    assert!(
        matches!(
            result,
            Err(ReportError::TooLarge(LimitExceeded::String { .. }))
        ),
        "{result:?}"
    );
    let number = format!(
        r#"{{"reportSpecification":{spec},"reportData":[{{"orderedRevenue":1{}}}]}}"#,
        "0".repeat(MAX_NUMBER_BYTES)
    );
    let path = write_file(&dir, "number.json", number.as_bytes());
    let (result, _) = read_limited(&path, false, DocumentLimits::default());
    assert!(
        matches!(
            result,
            Err(ReportError::TooLarge(LimitExceeded::Number { .. }))
        ),
        "{result:?}"
    );
}

#[test]
fn escaped_quotes_do_not_end_a_string_for_the_field_cap() {
    let dir = tempfile::tempdir().unwrap();
    // `\"` and `\\` inside strings: the lexer must follow escapes to find the string's end.
    let rows = vec![row_json(START, START + HOUR, r#"B0\"1\\"#, 3, 59.97)];
    let text = document(true, &spec_json(START, START + 6 * HOUR), &rows);
    let path = write_file(&dir, "escaped.json", text.as_bytes());
    let limits = DocumentLimits {
        max_string_bytes: 40, // the reportType value is 33 bytes
        ..DocumentLimits::default()
    };
    let (result, rows) = read_limited(&path, false, limits);
    assert_eq!(result.unwrap().rows, 1);
    assert_eq!(rows[0].asin, r#"B0"1\"#);
}

#[test]
fn staged_rows_round_trip_and_a_cut_staging_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(false, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "doc.json.gz", &gzip(&text));
    let staged = staging_path(&path);
    assert!(staged.to_string_lossy().ends_with("doc.json.gz.staged"));
    // Spilling after 0 bytes: the rows go to the file.
    let (summary, rows_staged) =
        stage_spilling_after(&path, true, window(), DocumentLimits::default(), &staged, 0).unwrap();
    assert_eq!(summary.rows, 3);
    assert_eq!(rows_staged.file(), Some(staged.as_path()));
    let mut rows = Vec::new();
    let count = read_staged_rows(&rows_staged, |row| {
        rows.push(row);
        Ok(())
    })
    .unwrap();
    assert_eq!(count, 3);
    assert_eq!(rows, expected_rows());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&staged).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let bytes = std::fs::read(&staged).unwrap();
    std::fs::write(&staged, &bytes[..bytes.len() - 3]).unwrap();
    let result = read_staged_rows(&rows_staged, |_| Ok(()));
    assert!(
        matches!(result, Err(ReportError::Truncated(_))),
        "{result:?}"
    );
    // The staging file lives as long as the staged rows.
    drop(rows_staged);
    assert!(!staged.exists());
}

#[test]
fn a_small_document_is_staged_in_memory_and_a_large_one_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(false, &spec_json(START, START + 6 * HOUR), &good_rows());
    let path = write_file(&dir, "doc.json.gz", &gzip(&text));
    let staged = staging_path(&path);
    let (summary, in_memory) =
        stage_vendor_sales_document(&path, true, window(), DocumentLimits::default(), &staged)
            .unwrap();
    assert_eq!(summary.rows, 3);
    assert_eq!(in_memory.file(), None);
    assert!(!staged.exists(), "no file for rows that fit in memory");
    let mut rows = Vec::new();
    assert_eq!(
        read_staged_rows(&in_memory, |row| {
            rows.push(row);
            Ok(())
        })
        .unwrap(),
        3
    );
    assert_eq!(rows, expected_rows());
    // A limit below the rows' size: the first rows were in memory when the file began,
    // and every row comes back, in order.
    let (_, spilled) = stage_spilling_after(
        &path,
        true,
        window(),
        DocumentLimits::default(),
        &staged,
        40,
    )
    .unwrap();
    assert!(staged.exists());
    let mut again = Vec::new();
    read_staged_rows(&spilled, |row| {
        again.push(row);
        Ok(())
    })
    .unwrap();
    assert_eq!(again, expected_rows());
}

#[test]
fn a_document_that_fails_validation_leaves_no_staging_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = document(true, &spec_json(START, START + 6 * HOUR), &good_rows());
    let bytes = gzip(&text);
    let path = write_file(&dir, "cut.json.gz", &bytes[..bytes.len() / 2]);
    let staged = staging_path(&path);
    // Spilling at once, so a file was begun before the cut was found.
    let result = stage_spilling_after(&path, true, window(), DocumentLimits::default(), &staged, 0);
    assert!(
        matches!(result, Err(ReportError::Truncated(_))),
        "{result:?}"
    );
    assert!(!staged.exists());
}

#[test]
fn deep_nesting_is_malformed_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_json(START, START + 6 * HOUR);
    // In a field the parser reads: containers are skipped (iteratively), then refused.
    let text = format!(
        r#"{{"reportSpecification":{spec},"reportData":[{{"startTime":"{}","endTime":"{}","orderedUnits":1,"orderedRevenue":1,"asin":{}1{}}}]}}"#,
        format_ts(START),
        format_ts(START + HOUR),
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let path = write_file(&dir, "deep.json", text.as_bytes());
    let (result, _) = read_limited(&path, false, DocumentLimits::default());
    assert!(
        matches!(result, Err(ReportError::Malformed(ref m)) if m.contains("asin must be a string")),
        "{result:?}"
    );
    // In a skipped field: skipped without recursion; the row is then judged on its own.
    let text = format!(
        r#"{{"reportSpecification":{spec},"reportData":[{{"extra":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let path = write_file(&dir, "deep-skipped.json", text.as_bytes());
    let (result, _) = read_limited(&path, false, DocumentLimits::default());
    assert!(
        matches!(result, Err(ReportError::Malformed(ref m)) if m.contains("missing field")),
        "{result:?}"
    );
}
