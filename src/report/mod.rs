//! Streaming parser for report documents.
//!
//! [`read_vendor_sales_document`] reads a `GET_VENDOR_REAL_TIME_SALES_REPORT` document
//! (see `docs/spapi-wire.md`) from a file, gunzipping on the fly, and hands its rows to a
//! callback one at a time: the document is never held in memory. It is driven by serde's
//! `DeserializeSeed`/`Visitor` machinery over `serde_json::Deserializer::from_reader`, so
//! memory stays flat whatever the document size.
//!
//! The document is validated while it streams: the `reportSpecification` window must be
//! the requested one (whichever order the top-level keys come in), every full-hour row
//! must lie inside that window and carry the required fields with the right types, and
//! the JSON and gzip streams must be complete. Rows already handed out before an error is
//! found are the caller's to roll back (the ledger applies a document in one transaction).
//!
//! [`read_error_document`] reads the small `{"errorDetails":"…"}` document that FATAL
//! reports point at.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::Path;

use flate2::bufread::GzDecoder;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::domain::{floor_hour, format_ts, parse_ts, HourWindow, SalesRow, HOUR};

/// Read buffer size; large enough that the gzip decoder is not called per token.
const BUFFER_BYTES: usize = 64 * 1024;
/// Longest error document text returned (and raw text quoted in errors), in characters.
const MAX_ERROR_TEXT: usize = 2000;

/// Why a document was rejected. Rows handed out before the error must be discarded.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The gzip stream or the JSON ends early (an interrupted download).
    #[error("document truncated: {0}")]
    Truncated(String),
    /// Invalid JSON, a corrupt gzip stream, or rows missing fields or with wrong types.
    #[error("malformed document: {0}")]
    Malformed(String),
    /// The document covers another window than the one requested.
    #[error("document window mismatch: {0}")]
    WindowMismatch(String),
    /// Reading the file failed (or a row callback failed with an io error).
    #[error("document io error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a document held, once fully read and validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportSummary {
    /// `reportSpecification.dataStartTime`, unix seconds.
    pub data_start: Option<i64>,
    /// `reportSpecification.dataEndTime`, unix seconds.
    pub data_end: Option<i64>,
    /// Full-hour rows handed to the callback.
    pub rows: u64,
    /// Rows skipped because they do not cover exactly one aligned hour.
    pub skipped_partial: u64,
}

/// Reads the document at `path` (gunzipping when `gzip`), calls `on_row` for each
/// full-hour row in document order, and validates the whole document (see the module
/// docs). An error returned by `on_row` aborts parsing and is returned as is.
pub fn read_vendor_sales_document(
    path: &Path,
    gzip: bool,
    expected: HourWindow,
    on_row: impl FnMut(SalesRow) -> Result<(), ReportError>,
) -> Result<ReportSummary, ReportError> {
    let reader = open_document(path, gzip)?;
    let mut state = ParseState {
        expected,
        on_row,
        summary: ReportSummary::default(),
        failure: None,
        spec_seen: false,
        data_seen: false,
        current_row: None,
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let parsed = DocumentSeed { state: &mut state }.deserialize(&mut deserializer);
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    if let Err(err) = parsed {
        return Err(classify_json_error(err, state.current_row));
    }
    // Trailing characters, and the rest of the gzip stream (its trailer and checksum).
    deserializer
        .end()
        .map_err(|err| classify_json_error(err, None))?;
    if !state.spec_seen {
        return Err(ReportError::Malformed(
            "document has no reportSpecification".to_string(),
        ));
    }
    if !state.data_seen {
        return Err(ReportError::Malformed(
            "document has no reportData".to_string(),
        ));
    }
    Ok(state.summary)
}

/// FATAL reports point at an error document `{"errorDetails":"…"}`; returns that text, or
/// the raw text (truncated) when the document is not that shape.
pub fn read_error_document(path: &Path, gzip: bool) -> Result<String, ReportError> {
    let mut reader = open_document(path, gzip)?;
    // Error documents are small; read at most a bounded prefix.
    let mut bytes = Vec::new();
    let limit = 64 * 1024;
    (&mut reader)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(classify_io_error)?;
    if bytes.len() as u64 <= limit {
        #[derive(serde::Deserialize)]
        struct ErrorDocument {
            #[serde(rename = "errorDetails")]
            error_details: String,
        }
        if let Ok(document) = serde_json::from_slice::<ErrorDocument>(&bytes) {
            return Ok(truncate_chars(
                document.error_details.trim(),
                MAX_ERROR_TEXT,
            ));
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(truncate_chars(text.trim(), MAX_ERROR_TEXT))
}

/// The outer `BufReader` is a concrete type so serde_json's byte-at-a-time reads stay
/// cheap; the boxed inner reader is only called once per buffer refill.
fn open_document(path: &Path, gzip: bool) -> Result<BufReader<Box<dyn Read>>, ReportError> {
    let file = File::open(path)?;
    let inner: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(BufReader::with_capacity(BUFFER_BYTES, file)))
    } else {
        Box::new(file)
    };
    Ok(BufReader::with_capacity(BUFFER_BYTES, inner))
}

/// Io errors from the decoder: an early end is truncation, corruption is malformation.
fn classify_io_error(err: std::io::Error) -> ReportError {
    match err.kind() {
        ErrorKind::UnexpectedEof => ReportError::Truncated(format!("the stream ends early: {err}")),
        ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            ReportError::Malformed(format!("corrupt gzip stream: {err}"))
        }
        _ => ReportError::Io(err),
    }
}

fn classify_json_error(err: serde_json::Error, row: Option<u64>) -> ReportError {
    let place = match row {
        Some(index) => format!(" in reportData row {index}"),
        None => String::new(),
    };
    match err.classify() {
        serde_json::error::Category::Io => classify_io_error(std::io::Error::from(err)),
        serde_json::error::Category::Eof => {
            ReportError::Truncated(format!("the json ends early{place}: {err}"))
        }
        serde_json::error::Category::Syntax => {
            ReportError::Malformed(format!("invalid json{place}: {err}"))
        }
        serde_json::error::Category::Data => {
            ReportError::Malformed(format!("unexpected json value{place}: {err}"))
        }
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parser state shared by the seeds. Errors that are ours (not serde_json's) are parked in
/// `failure` and a placeholder serde error unwinds the parse.
struct ParseState<F> {
    expected: HourWindow,
    on_row: F,
    summary: ReportSummary,
    failure: Option<ReportError>,
    spec_seen: bool,
    data_seen: bool,
    /// The reportData row being parsed, for error messages.
    current_row: Option<u64>,
}

impl<F> ParseState<F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    fn fail<E: de::Error>(&mut self, err: ReportError) -> E {
        self.failure = Some(err);
        E::custom("document rejected")
    }

    fn check_spec(&mut self, spec: RawSpec) -> Result<(), ReportError> {
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

    fn accept_row(&mut self, index: u64, raw: RawRow) -> Result<(), ReportError> {
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

fn malformed_row(index: u64, what: &str) -> ReportError {
    ReportError::Malformed(format!("reportData row {index}: {what}"))
}

fn row_time(value: Option<RawTime>, field: &str, index: u64) -> Result<i64, ReportError> {
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
fn parse_time(text: &str) -> Option<i64> {
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

/// A row's `startTime`/`endTime`, parsed as it is read (no allocation when valid).
enum RawTime {
    At(i64),
    /// A string that is not a timestamp (quoted, shortened, in errors).
    Invalid(String),
    /// Not a string at all.
    Other(Scalar),
}

impl<'de> de::Deserialize<'de> for RawTime {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawTimeVisitor)
    }
}

struct RawTimeVisitor;

impl<'de> Visitor<'de> for RawTimeVisitor {
    type Value = RawTime;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a timestamp string")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<RawTime, E> {
        Ok(match parse_time(value) {
            Some(at) => RawTime::At(at),
            None => RawTime::Invalid(truncate_chars(value, 40)),
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawTime, E> {
        ScalarVisitor.visit_unit().map(RawTime::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawTime, E> {
        ScalarVisitor.visit_none().map(RawTime::Other)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<RawTime, E> {
        ScalarVisitor.visit_bool(value).map(RawTime::Other)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawTime, E> {
        ScalarVisitor.visit_i64(value).map(RawTime::Other)
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawTime, E> {
        ScalarVisitor.visit_u64(value).map(RawTime::Other)
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<RawTime, E> {
        ScalarVisitor.visit_f64(value).map(RawTime::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawTime, A::Error> {
        ScalarVisitor.visit_seq(seq).map(RawTime::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawTime, A::Error> {
        ScalarVisitor.visit_map(map).map(RawTime::Other)
    }
}

fn spec_time(value: Option<Scalar>, field: &str) -> Result<i64, ReportError> {
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

/// Any JSON value, reduced to what the validation needs; containers are skipped.
enum Scalar {
    Null,
    Bool,
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Array,
    Object,
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::I64(_) | Scalar::U64(_) => "an integer",
            Scalar::F64(_) => "a fractional number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any json value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool)
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar::I64(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar::U64(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar, E> {
        Ok(Scalar::F64(value))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(value.to_owned()))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(value))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// Object keys we care about, matched without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    ReportSpecification,
    ReportData,
    DataStartTime,
    DataEndTime,
    StartTime,
    EndTime,
    Asin,
    OrderedUnits,
    OrderedRevenue,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "reportSpecification" => Key::ReportSpecification,
            "reportData" => Key::ReportData,
            "dataStartTime" => Key::DataStartTime,
            "dataEndTime" => Key::DataEndTime,
            "startTime" => Key::StartTime,
            "endTime" => Key::EndTime,
            "asin" => Key::Asin,
            "orderedUnits" => Key::OrderedUnits,
            "orderedRevenue" => Key::OrderedRevenue,
            _ => Key::Other,
        })
    }
}

/// The top-level document object.
struct DocumentSeed<'s, F> {
    state: &'s mut ParseState<F>,
}

impl<'de, F> DeserializeSeed<'de> for DocumentSeed<'_, F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, F> Visitor<'de> for DocumentSeed<'_, F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the report document object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::ReportSpecification => {
                    let spec = map.next_value_seed(SpecSeed)?;
                    if let Err(err) = self.state.check_spec(spec) {
                        return Err(self.state.fail(err));
                    }
                }
                Key::ReportData => {
                    if self.state.data_seen {
                        return Err(self
                            .state
                            .fail(ReportError::Malformed("duplicate reportData".to_string())));
                    }
                    self.state.data_seen = true;
                    map.next_value_seed(RowsSeed {
                        state: &mut *self.state,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `reportSpecification`: only the window matters.
#[derive(Default)]
struct RawSpec {
    data_start: Option<Scalar>,
    data_end: Option<Scalar>,
}

struct SpecSeed;

impl<'de> DeserializeSeed<'de> for SpecSeed {
    type Value = RawSpec;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawSpec, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpecSeed {
    type Value = RawSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the reportSpecification object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSpec, A::Error> {
        let mut spec = RawSpec::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::DataStartTime => spec.data_start = Some(map.next_value()?),
                Key::DataEndTime => spec.data_end = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(spec)
    }
}

/// `reportData`: rows are validated and handed out as they are parsed.
struct RowsSeed<'s, F> {
    state: &'s mut ParseState<F>,
}

impl<'de, F> DeserializeSeed<'de> for RowsSeed<'_, F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F> Visitor<'de> for RowsSeed<'_, F>
where
    F: FnMut(SalesRow) -> Result<(), ReportError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the reportData array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        loop {
            self.state.current_row = Some(index);
            let Some(raw) = seq.next_element_seed(RowSeed)? else {
                break;
            };
            if let Err(err) = self.state.accept_row(index, raw) {
                return Err(self.state.fail(err));
            }
            index += 1;
        }
        self.state.current_row = None;
        Ok(())
    }
}

/// One `reportData` row, as read; [`ParseState::accept_row`] checks it.
#[derive(Default)]
struct RawRow {
    start_time: Option<RawTime>,
    end_time: Option<RawTime>,
    asin: Option<Scalar>,
    ordered_units: Option<Scalar>,
    ordered_revenue: Option<Scalar>,
}

struct RowSeed;

impl<'de> DeserializeSeed<'de> for RowSeed {
    type Value = RawRow;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawRow, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed {
    type Value = RawRow;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a reportData row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRow, A::Error> {
        let mut row = RawRow::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::StartTime => {
                    row.start_time = Some(map.next_value()?);
                    continue;
                }
                Key::EndTime => {
                    row.end_time = Some(map.next_value()?);
                    continue;
                }
                Key::Asin => &mut row.asin,
                Key::OrderedUnits => &mut row.ordered_units,
                Key::OrderedRevenue => &mut row.ordered_revenue,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
