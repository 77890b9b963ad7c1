//! Amazon data of the simulator: deterministic vendor sales rows and the
//! `GET_VENDOR_REAL_TIME_SALES_REPORT` documents built from them (see `docs/spapi-wire.md`).
//!
//! Every value derives from (seed, marketplace, asin index, hour) through a small
//! FNV-1a + splitmix64 hash, so any hour can be regenerated at any time and a test can
//! compare a database with [`vendor_sales_rows`] directly.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;

use crate::domain::{floor_hour, format_ts, SalesRow, HOUR};

/// The only report type the simulator produces.
pub const VENDOR_REAL_TIME_SALES_REPORT: &str = "GET_VENDOR_REAL_TIME_SALES_REPORT";

/// Share of (asin, hour) pairs without a row, per mille.
const NO_ROW_PER_MILLE: u64 = 300;
/// Share of (asin, hour) pairs with negative units (returns, cancellations), per mille.
const NEGATIVE_PER_MILLE: u64 = 50;
/// Cheapest and dearest simulated item, in cents.
const PRICE_RANGE_CENTS: (u64, u64) = (499, 19_999);

/// What a hash is for, so that the draws for one (asin, hour) are independent.
#[derive(Clone, Copy)]
enum Draw {
    Price = 1,
    Presence = 2,
    Units = 3,
}

/// The ASIN the simulator uses for item `index` of a marketplace.
pub fn asin(index: u32) -> String {
    format!("B{index:09}")
}

/// The sales rows of one hour (`hour_utc` is floored to its hour) for the first `asins`
/// items of `marketplace`: deterministic in all four inputs, sorted by asin, about 30% of
/// items without a row, about 5% with -1..-3 units, the rest with 1..20 units, and
/// `ordered_revenue = units * price` where each item keeps one price (4.99..199.99).
pub fn vendor_sales_rows(seed: u64, marketplace: &str, asins: u32, hour_utc: i64) -> Vec<SalesRow> {
    let hour_utc = floor_hour(hour_utc);
    let mut rows = Vec::new();
    for index in 0..asins {
        let presence = hash(seed, marketplace, index, hour_utc, Draw::Presence) % 1000;
        if presence < NO_ROW_PER_MILLE {
            continue;
        }
        let units_draw = hash(seed, marketplace, index, hour_utc, Draw::Units);
        let ordered_units = if presence < NO_ROW_PER_MILLE + NEGATIVE_PER_MILLE {
            -1 - (units_draw % 3) as i64
        } else {
            1 + (units_draw % 20) as i64
        };
        let price_cents = price_cents(seed, marketplace, index);
        let revenue_cents = ordered_units * price_cents;
        rows.push(SalesRow {
            hour_utc,
            asin: asin(index),
            ordered_units,
            ordered_revenue: round_cents(revenue_cents as f64 / 100.0),
        });
    }
    rows
}

/// The fixed price of one item, in cents.
fn price_cents(seed: u64, marketplace: &str, index: u32) -> i64 {
    let (low, high) = PRICE_RANGE_CENTS;
    let draw = hash(seed, marketplace, index, 0, Draw::Price);
    (low + draw % (high - low + 1)) as i64
}

fn round_cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

/// FNV-1a over the inputs, finished with splitmix64 so that neighbouring hours and
/// indexes land far apart.
fn hash(seed: u64, marketplace: &str, index: u32, hour_utc: i64, draw: Draw) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut state = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            state ^= u64::from(*byte);
            state = state.wrapping_mul(FNV_PRIME);
        }
    };
    feed(&seed.to_le_bytes());
    feed(&(marketplace.len() as u64).to_le_bytes());
    feed(marketplace.as_bytes());
    feed(&index.to_le_bytes());
    feed(&hour_utc.to_le_bytes());
    feed(&[draw as u8]);
    splitmix64(state)
}

fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The start of every full hour inside `[start, end)`.
pub(crate) fn full_hours(start: i64, end: i64) -> impl Iterator<Item = i64> {
    let first = floor_hour(start.saturating_add(HOUR - 1));
    (0..)
        .map(move |step: i64| first + step * HOUR)
        .take_while(move |hour| hour + HOUR <= end)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportDocument<'a> {
    report_specification: ReportSpecification<'a>,
    report_data: Vec<ReportDataRow<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportSpecification<'a> {
    report_type: &'static str,
    report_options: ReportOptions,
    data_start_time: String,
    data_end_time: String,
    marketplace_ids: [&'a str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportOptions {
    currency_code: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportDataRow<'a> {
    start_time: String,
    end_time: String,
    asin: &'a str,
    ordered_units: i64,
    ordered_revenue: f64,
}

/// The JSON (before gzip) of a DONE vendor sales document for `[start, end)`, and the rows
/// it holds.
pub(crate) fn sales_document(
    seed: u64,
    marketplace: &str,
    asins: u32,
    start: i64,
    end: i64,
) -> Result<(Vec<u8>, Vec<SalesRow>), serde_json::Error> {
    let rows: Vec<SalesRow> = full_hours(start, end)
        .flat_map(|hour| vendor_sales_rows(seed, marketplace, asins, hour))
        .collect();
    let document = ReportDocument {
        report_specification: ReportSpecification {
            report_type: VENDOR_REAL_TIME_SALES_REPORT,
            report_options: ReportOptions {
                currency_code: "USD",
            },
            data_start_time: format_ts(start),
            data_end_time: format_ts(end),
            marketplace_ids: [marketplace],
        },
        report_data: rows
            .iter()
            .map(|row| ReportDataRow {
                start_time: format_ts(row.hour_utc),
                end_time: format_ts(row.hour_utc + HOUR),
                asin: &row.asin,
                ordered_units: row.ordered_units,
                ordered_revenue: row.ordered_revenue,
            })
            .collect(),
    };
    let json = serde_json::to_vec(&document)?;
    Ok((json, rows))
}

/// The JSON (before gzip) of the error document a FATAL report points at.
pub(crate) fn error_document(details: &str) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::json!({ "errorDetails": details }))
}

/// What a `malformed` document holds (before gzip): a complete gzip stream of text that
/// is not JSON (a stray comma, an unquoted key, a missing bracket). Cut-off JSON is the
/// `truncated` fault's business.
pub(crate) const MALFORMED_DOCUMENT: &[u8] = b"{\"reportSpecification\": {\"reportType\": \"GET_VENDOR_REAL_TIME_SALES_REPORT\",, dataStartTime: 2025-12-09T00:00:00Z}, \"reportData\": [{\"asin\": \"B0000\"]}\n";

/// Gzip-compresses `bytes` in memory.
pub(crate) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        Compression::default(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_ts;

    fn hour(text: &str) -> i64 {
        parse_ts(text).expect("test timestamp")
    }

    #[test]
    fn rows_are_deterministic() {
        let at = hour("2025-12-09T05:00:00Z");
        let first = vendor_sales_rows(42, "ATVPDKIKX0DER", 25, at);
        let second = vendor_sales_rows(42, "ATVPDKIKX0DER", 25, at);
        assert_eq!(first, second);
        assert!(!first.is_empty());
        // Inside the hour floors to the hour.
        assert_eq!(first, vendor_sales_rows(42, "ATVPDKIKX0DER", 25, at + 1234));
    }

    #[test]
    fn rows_depend_on_seed_marketplace_and_hour() {
        let start = hour("2025-12-09T00:00:00Z");
        let collect = |seed: u64, marketplace: &str, offset: i64| -> Vec<SalesRow> {
            (0..6)
                .flat_map(|step| {
                    vendor_sales_rows(seed, marketplace, 25, start + offset + step * HOUR)
                })
                .collect()
        };
        let base = collect(42, "ATVPDKIKX0DER", 0);
        assert_ne!(
            base,
            collect(43, "ATVPDKIKX0DER", 0),
            "seed changes the rows"
        );
        assert_ne!(
            base,
            collect(42, "A1PA6795UKMFR9", 0),
            "marketplace changes the rows"
        );
        let shifted = collect(42, "ATVPDKIKX0DER", HOUR);
        let units =
            |rows: &[SalesRow]| rows.iter().map(|row| row.ordered_units).collect::<Vec<_>>();
        assert_ne!(units(&base), units(&shifted), "hour changes the rows");
    }

    #[test]
    fn rows_are_sorted_asins_are_formatted_and_prices_fixed() {
        let start = hour("2025-12-01T00:00:00Z");
        let mut price_by_asin = std::collections::HashMap::new();
        for step in 0..48 {
            let rows = vendor_sales_rows(7, "ATVPDKIKX0DER", 30, start + step * HOUR);
            assert!(rows.windows(2).all(|pair| pair[0].asin < pair[1].asin));
            for row in rows {
                assert_eq!(row.hour_utc, start + step * HOUR);
                assert_eq!(row.asin.len(), 10);
                assert!(row.asin.starts_with('B'));
                assert!(row.ordered_units != 0);
                assert!((-3..=20).contains(&row.ordered_units));
                let unit_price = row.ordered_revenue / row.ordered_units as f64;
                assert!((4.99..=199.99).contains(&((unit_price * 100.0).round() / 100.0)));
                let cents = (row.ordered_revenue * 100.0).round();
                assert!(
                    (row.ordered_revenue * 100.0 - cents).abs() < 1e-6,
                    "two decimals"
                );
                let known = price_by_asin.entry(row.asin.clone()).or_insert(unit_price);
                assert!((*known - unit_price).abs() < 1e-6, "one price per asin");
            }
        }
        assert_eq!(asin(1), "B000000001");
    }

    #[test]
    fn shares_of_missing_and_negative_rows_are_about_right() {
        let start = hour("2025-01-01T00:00:00Z");
        let asins = 50u32;
        let hours = 400i64;
        let mut present = 0usize;
        let mut negative = 0usize;
        for step in 0..hours {
            for row in vendor_sales_rows(42, "ATVPDKIKX0DER", asins, start + step * HOUR) {
                present += 1;
                if row.ordered_units < 0 {
                    negative += 1;
                }
            }
        }
        let total = (asins as f64) * (hours as f64);
        let missing_share = 1.0 - present as f64 / total;
        let negative_share = negative as f64 / total;
        assert!(
            (0.27..0.33).contains(&missing_share),
            "missing {missing_share}"
        );
        assert!(
            (0.035..0.065).contains(&negative_share),
            "negative {negative_share}"
        );
    }

    #[test]
    fn full_hours_cover_only_whole_hours() {
        let start = hour("2025-12-09T00:00:00Z");
        assert_eq!(full_hours(start, start + 3 * HOUR).count(), 3);
        assert_eq!(
            full_hours(start + 1, start + 3 * HOUR).collect::<Vec<_>>(),
            vec![start + HOUR, start + 2 * HOUR]
        );
        assert_eq!(full_hours(start, start + HOUR - 1).count(), 0);
        assert_eq!(full_hours(start + 10, start + 20).count(), 0);
    }

    #[test]
    fn sales_document_has_the_wire_schema() {
        let start = hour("2025-12-09T00:00:00Z");
        let (json, rows) =
            sales_document(42, "ATVPDKIKX0DER", 5, start, start + 2 * HOUR).expect("document");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("valid json");
        let spec = &value["reportSpecification"];
        assert_eq!(spec["reportType"], VENDOR_REAL_TIME_SALES_REPORT);
        assert_eq!(spec["reportOptions"]["currencyCode"], "USD");
        assert_eq!(spec["dataStartTime"], "2025-12-09T00:00:00Z");
        assert_eq!(spec["dataEndTime"], "2025-12-09T02:00:00Z");
        assert_eq!(spec["marketplaceIds"][0], "ATVPDKIKX0DER");
        let data = value["reportData"].as_array().expect("reportData array");
        assert_eq!(data.len(), rows.len());
        assert_eq!(data[0]["startTime"], format_ts(rows[0].hour_utc));
        assert_eq!(data[0]["endTime"], format_ts(rows[0].hour_utc + HOUR));
        assert_eq!(data[0]["asin"], rows[0].asin.as_str());
        assert_eq!(data[0]["orderedUnits"], rows[0].ordered_units);
        assert_eq!(data[0]["orderedRevenue"], rows[0].ordered_revenue);
    }

    #[test]
    fn malformed_document_is_not_json() {
        assert!(serde_json::from_slice::<serde_json::Value>(MALFORMED_DOCUMENT).is_err());
    }
}
