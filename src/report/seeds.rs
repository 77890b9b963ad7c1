//! The serde machinery of the streaming parser: the seeds and visitors of the document, its
//! specification, its rows, and the loosely typed scalars and times they contain.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::validate::{parse_time, ParseState};
use super::{truncate_chars, ReportError};
use crate::domain::SalesRow;

/// A row's `startTime`/`endTime`, parsed as it is read (no allocation when valid).
pub(super) enum RawTime {
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

pub(super) struct RawTimeVisitor;

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

/// Any JSON value, reduced to what the validation needs; containers are skipped.
pub(super) enum Scalar {
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
    pub(super) fn kind(&self) -> &'static str {
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

pub(super) struct ScalarVisitor;

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
pub(super) enum Key {
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

pub(super) struct KeyVisitor;

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
pub(super) struct DocumentSeed<'s, F> {
    pub(super) state: &'s mut ParseState<F>,
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
pub(super) struct RawSpec {
    pub(super) data_start: Option<Scalar>,
    pub(super) data_end: Option<Scalar>,
}

pub(super) struct SpecSeed;

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
pub(super) struct RowsSeed<'s, F> {
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
pub(super) struct RawRow {
    pub(super) start_time: Option<RawTime>,
    pub(super) end_time: Option<RawTime>,
    pub(super) asin: Option<Scalar>,
    pub(super) ordered_units: Option<Scalar>,
    pub(super) ordered_revenue: Option<Scalar>,
}

pub(super) struct RowSeed;

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
