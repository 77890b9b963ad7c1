//! Validation while the document streams: the parser state shared by the seeds, the check
//! of the report specification against the requested window, and the checks of every row.

use serde::de;

use super::seeds::{RawRow, RawSpec, RawTime, Scalar};
use super::{truncate_chars, ReportError, ReportSummary};
use crate::domain::{floor_hour, format_ts, parse_ts, HourWindow, SalesRow, HOUR};

/// Parser state shared by the seeds. Errors that are ours (not serde_json's) are parked in
/// `failure` and a placeholder serde error unwinds the parse.
pub(super) struct ParseState<F> {
    pub(super) expected: HourWindow,
    pub(super) on_row: F,
    pub(super) summary: ReportSummary,
    pub(super) failure: Option<ReportError>,
    pub(super) spec_seen: bool,
    pub(super) data_seen: bool,
    /// The reportData row being parsed, for error messages.
    pub(super) current_row: Option<u64>,
}

impl<F> ParseState<F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    pub(super) fn fail<E: de::Error>(&mut self, err: ReportError) -> E {
        self.failure = Some(err);
        E::custom("document rejected")
    }

    pub(super) fn check_spec(&mut self, spec: RawSpec) -> Result<(), ReportError> {
        if self.spec_seen {
            return Err(ReportError::Malformed(
                "duplicate reportSpecification".to_string(),
            ));
        }
        self.spec_seen = true;
        let start = spec_time(spec.data_start, "dataStartTime")?;
        let end = spec_time(spec.data_end, "dataEndTime")?;
        self.summary.data_start = Some(start);
        self.summary.data_end = Some(end);
        if start != self.expected.start || end != self.expected.end {
            return Err(ReportError::WindowMismatch(format!(
                "reportSpecification covers [{}, {}) but the requested window is {}",
                format_ts(start),
                format_ts(end),
                self.expected
            )));
        }
        Ok(())
    }

    pub(super) fn accept_row(&mut self, index: u64, raw: RawRow) -> Result<(), ReportError> {
        let start = row_time(raw.start_time, "startTime", index)?;
        let end = row_time(raw.end_time, "endTime", index)?;
        let asin = match raw.asin {
            Some(Scalar::Str(asin)) if !asin.is_empty() => asin,
            Some(Scalar::Str(_)) => return Err(malformed_row(index, "field asin is empty")),
            Some(other) => {
                return Err(malformed_row(
                    index,
                    &format!("field asin must be a string, got {}", other.kind()),
                ))
            }
            None => return Err(malformed_row(index, "missing field asin")),
        };
        let ordered_units = match raw.ordered_units {
            Some(Scalar::I64(units)) => units,
            Some(Scalar::U64(units)) => i64::try_from(units).map_err(|_| {
                malformed_row(
                    index,
                    &format!("field orderedUnits is out of range: {units}"),
                )
            })?,
            Some(other) => {
                return Err(malformed_row(
                    index,
                    &format!(
                        "field orderedUnits must be an integer, got {}",
                        other.kind()
                    ),
                ))
            }
            None => return Err(malformed_row(index, "missing field orderedUnits")),
        };
        let ordered_revenue = match raw.ordered_revenue {
            Some(Scalar::F64(revenue)) => revenue,
            Some(Scalar::I64(revenue)) => revenue as f64,
            Some(Scalar::U64(revenue)) => revenue as f64,
            Some(other) => {
                return Err(malformed_row(
                    index,
                    &format!(
                        "field orderedRevenue must be a number, got {}",
                        other.kind()
                    ),
                ))
            }
            None => return Err(malformed_row(index, "missing field orderedRevenue")),
        };
        if end <= start {
            return Err(malformed_row(
                index,
                &format!(
                    "endTime {} is not after startTime {}",
                    format_ts(end),
                    format_ts(start)
                ),
            ));
        }
        let hour = floor_hour(start);
        if !self.expected.contains_hour(hour) {
            return Err(ReportError::WindowMismatch(format!(
                "reportData row {index} starts at {}, outside the requested window {}",
                format_ts(start),
                self.expected
            )));
        }
        if end - start != HOUR || start != hour {
            self.summary.skipped_partial += 1;
            return Ok(());
        }
        (self.on_row)(SalesRow {
            hour_utc: start,
            asin,
            ordered_units,
            ordered_revenue,
        })?;
        self.summary.rows += 1;
        Ok(())
    }
}

pub(super) fn malformed_row(index: u64, what: &str) -> ReportError {
    ReportError::Malformed(format!("reportData row {index}: {what}"))
}

pub(super) fn row_time(
    value: Option<RawTime>,
    field: &str,
    index: u64,
) -> Result<i64, ReportError> {
    match value {
        Some(RawTime::At(at)) => Ok(at),
        Some(RawTime::Invalid(text)) => Err(malformed_row(
            index,
            &format!("field {field} is not an rfc 3339 timestamp: {text:?}"),
        )),
        Some(RawTime::Other(other)) => Err(malformed_row(
            index,
            &format!(
                "field {field} must be a timestamp string, got {}",
                other.kind()
            ),
        )),
        None => Err(malformed_row(index, &format!("missing field {field}"))),
    }
}

/// Parses an RFC 3339 timestamp into unix seconds, with a fast path for the canonical
/// `YYYY-MM-DDTHH:MM:SSZ` form every row uses (falling back to [`parse_ts`]).
pub(super) fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
    {
        let number = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |acc, digit| {
                digit
                    .is_ascii_digit()
                    .then(|| acc * 10 + u32::from(digit - b'0'))
            })
        };
        let fast = (|| {
            let year = i32::try_from(number(0, 4)?).ok()?;
            let date = chrono::NaiveDate::from_ymd_opt(year, number(5, 7)?, number(8, 10)?)?;
            let time = date.and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)?;
            Some(time.and_utc().timestamp())
        })();
        if fast.is_some() {
            return fast;
        }
    }
    parse_ts(text)
}

pub(super) fn spec_time(value: Option<Scalar>, field: &str) -> Result<i64, ReportError> {
    let text = match value {
        Some(Scalar::Str(text)) => text,
        Some(other) => {
            return Err(ReportError::Malformed(format!(
                "reportSpecification field {field} must be a timestamp string, got {}",
                other.kind()
            )))
        }
        None => {
            return Err(ReportError::Malformed(format!(
                "reportSpecification has no field {field}"
            )))
        }
    };
    parse_ts(&text).ok_or_else(|| {
        ReportError::Malformed(format!(
            "reportSpecification field {field} is not an rfc 3339 timestamp: {:?}",
            truncate_chars(&text, 40)
        ))
    })
}
