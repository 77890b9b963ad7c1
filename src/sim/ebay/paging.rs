//! Paging of the simulated eBay APIs: filter ranges, `limit`/`offset` pages, and the paged
//! bodies with their `next`/`prev` links.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::Ebay;
use crate::domain::parse_millis;
use crate::sim::Simulator;

/// What a data request asked for, once parsed.
pub(super) struct Asked {
    pub(super) from_ms: Option<i64>,
    pub(super) to_ms: Option<i64>,
    pub(super) limit: u64,
    pub(super) offset: u64,
    /// The request had no `filter`: the operation's default window applies (getOrders:
    /// orders created in the last 90 days).
    pub(super) unfiltered: bool,
}

/// How far an open-ended Finances date range (`transactionDate:[FROM..]`,
/// `payoutDate:[FROM..]`) reaches: "the date range would include the starting date and
/// up to 90 days past that date, or the current date".
pub(super) const OPEN_RANGE_DAYS: i64 = 90;

impl Asked {
    /// The page and window a Finances request asks for: `range` (milliseconds; an open
    /// end reaches [`OPEN_RANGE_DAYS`] past the start), or the operation's default
    /// window without one.
    pub(super) fn finances(range: Option<(i64, Option<i64>)>, limit: u64, offset: u64) -> Asked {
        Asked {
            from_ms: range.map(|(from, _)| from),
            to_ms: range.map(|(from, to)| {
                to.unwrap_or_else(|| from.saturating_add(OPEN_RANGE_DAYS * super::DAY * 1000))
            }),
            limit,
            offset,
            unfiltered: range.is_none(),
        }
    }
}

/// A request eBay refuses with 400: its `errorId`, `domain` and message.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BadInput {
    pub(super) error_id: u32,
    pub(super) domain: &'static str,
    pub(super) message: String,
}

impl BadInput {
    pub(super) fn new(error_id: u32, domain: &'static str, message: String) -> BadInput {
        BadInput {
            error_id,
            domain,
            message,
        }
    }
}

/// A plain message: eBay's generic invalid-request error (`errorId` 2004).
impl From<String> for BadInput {
    fn from(message: String) -> BadInput {
        BadInput::new(2004, "API_REQUEST", message)
    }
}

/// The criteria of eBay's `filter` parameter: `name:value` parts separated by commas
/// outside `[...]` and `{...}`, each trimmed (eBay's examples put a space after the
/// comma). The name is as sent; the value still has its brackets or braces. `Err` for a
/// part without `:` or for unbalanced brackets.
pub(super) fn criteria(filter: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (index, byte) in filter.bytes().enumerate() {
        match byte {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(&filter[start..index]);
                start = index + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("filter {filter:?} has an unbalanced bracket"));
        }
    }
    if depth != 0 {
        return Err(format!("filter {filter:?} has an unbalanced bracket"));
    }
    parts.push(&filter[start..]);
    parts
        .into_iter()
        .map(|part| {
            let part = part.trim();
            part.split_once(':')
                .map(|(name, value)| (name.trim(), value.trim()))
                .ok_or_else(|| format!("filter criterion {part:?} is not name:value"))
        })
        .collect()
}

/// The values of a `{A|B}` set criterion; `None` unless the value is braced and every
/// member is non-empty.
pub(super) fn set_values(value: &str) -> Option<Vec<&str>> {
    let inner = value.strip_prefix('{')?.strip_suffix('}')?;
    let members: Vec<&str> = inner.split('|').map(str::trim).collect();
    members
        .iter()
        .all(|member| !member.is_empty())
        .then_some(members)
}

/// A date range criterion's value `[FROM..TO]` (TO may be empty): `Err` says which of
/// eBay's complaints applies.
pub(super) enum RangeError {
    /// Not `[...]` with `..` inside.
    Shape,
    /// No start date.
    MissingStart,
    /// A date that is not ISO 8601.
    BadDate,
    /// The start after the end.
    Reversed,
}

/// Parses a range criterion's value into unix milliseconds (the end optional).
pub(super) fn range_value(value: &str) -> Result<(i64, Option<i64>), RangeError> {
    let inner = value
        .strip_prefix('[')
        .and_then(|value| value.strip_suffix(']'))
        .ok_or(RangeError::Shape)?;
    let (from, to) = inner.split_once("..").ok_or(RangeError::Shape)?;
    let (from, to) = (from.trim(), to.trim());
    if from.is_empty() {
        return Err(RangeError::MissingStart);
    }
    let from = parse_millis(from).ok_or(RangeError::BadDate)?;
    let to = match to {
        "" => None,
        text => Some(parse_millis(text).ok_or(RangeError::BadDate)?),
    };
    if to.is_some_and(|to| to < from) {
        return Err(RangeError::Reversed);
    }
    Ok((from, to))
}

/// The page `asked` for out of `matching` (sorted already), and how many matched.
pub(super) fn page_of<T>(matching: Vec<T>, asked: &Asked) -> (u64, Vec<T>) {
    let total = matching.len() as u64;
    let page = matching
        .into_iter()
        .skip(asked.offset as usize)
        .take(asked.limit as usize)
        .collect();
    (total, page)
}

/// The hostile `ebay_total_grows` page: items cycle through `matching` forever and the
/// `total` is always two pages beyond the one asked for, so it grows on every page.
pub(super) fn growing_page_of<T: Clone>(matching: Vec<T>, asked: &Asked) -> (u64, Vec<T>) {
    let limit = asked.limit.clamp(1, 200);
    let total = asked
        .offset
        .saturating_add(limit.saturating_mul(2))
        .saturating_add(matching.len() as u64);
    if matching.is_empty() {
        return (total, Vec::new());
    }
    let start = (asked.offset % matching.len() as u64) as usize;
    let page = matching
        .iter()
        .cycle()
        .skip(start)
        .take(limit as usize)
        .cloned()
        .collect();
    (total, page)
}

/// An offset-paged answer of `path`: `href`, `total`, `limit`, `offset`, the page's
/// `items` under `key`, and `next`/`prev` links where there are such pages. Links are
/// absolute on `origin` (the simulator's own address, never the request's `Host`) with
/// the query percent-encoded, as eBay sends them, and keep every parameter of the
/// request (`filter`, `sort`, `orderIds`, ...; by name, then `limit` and `offset`).
pub(super) fn offset_page(
    origin: &str,
    path: &str,
    query: &HashMap<String, String>,
    asked: &Asked,
    total: u64,
    key: &str,
    items: Vec<Value>,
) -> Value {
    let base_query = link_query(query);
    let (href, next, prev) = page_links(
        &format!("{origin}{path}"),
        &base_query,
        total,
        asked.limit,
        asked.offset,
    );
    let mut body =
        json!({"href": href, "total": total, "limit": asked.limit, "offset": asked.offset});
    body[key] = json!(items);
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    if let Some(prev) = prev {
        body["prev"] = json!(prev);
    }
    body
}

/// The parameters of `query` but `limit` and `offset`, sorted by name, each
/// `name=value&` percent-encoded: the part of a page link that stays from page to page.
pub(super) fn link_query(query: &HashMap<String, String>) -> String {
    let mut names: Vec<&String> = query
        .keys()
        .filter(|name| !matches!(name.as_str(), "limit" | "offset"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let value = query.get(name).map(String::as_str).unwrap_or_default();
            format!("{}={}&", percent_encode(name), percent_encode(value))
        })
        .collect()
}

pub(super) fn parse_number(
    query: &HashMap<String, String>,
    key: &str,
    default: u64,
) -> Result<u64, String> {
    match query.get(key) {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| format!("{key} must be a non-negative integer, got {text:?}")),
    }
}

/// `limit` within `1..=max` (`default` when absent); `Err` holds the refused text, for
/// the operation's own error (getOrders 31100, Finances 135003).
pub(super) fn parse_limit(
    query: &HashMap<String, String>,
    default: u64,
    max: u64,
) -> Result<u64, String> {
    match query.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| text.clone()),
    }
}

/// `offset` (0 when absent); `Err` holds the refused text, as [`parse_limit`].
pub(super) fn parse_offset(query: &HashMap<String, String>) -> Result<u64, String> {
    match query.get("offset") {
        None => Ok(0),
        Some(text) => text.parse::<u64>().map_err(|_| text.clone()),
    }
}

/// A Post-Order search answer (`searchCases`, `inquiry/search`): the `(created, id, json)`
/// members sorted by creation then id, the page `asked` for, eBay's `paginationOutput`,
/// and the total once more under `total_field` (`totalNumberOfCases`, ...).
pub(super) fn post_order_page(
    mut matching: Vec<(i64, String, Value)>,
    asked: &Asked,
    total_field: &str,
) -> Value {
    matching.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let (total, page) = page_of(matching, asked);
    let members: Vec<Value> = page.into_iter().map(|(_, _, value)| value).collect();
    let mut body = json!({
        "members": members,
        "paginationOutput": {
            "limit": asked.limit,
            "offset": asked.offset,
            "totalEntries": total,
            "totalPages": total.div_ceil(asked.limit.max(1)),
        },
    });
    body[total_field] = json!(total);
    body
}

/// One page of `items`, padded when an oversized page is due.
pub(super) fn paged_body(
    ebay: &Ebay,
    sim: &Simulator,
    operation: &str,
    mut body: Value,
) -> Response {
    let oversize = {
        let mut state = ebay.lock();
        if state.oversize_after > 0 {
            state.oversize_after -= 1;
            false
        } else if state.oversize_next > 0 {
            state.oversize_next -= 1;
            Ebay::bump(&mut state.stats.oversized, operation);
            true
        } else {
            false
        }
    };
    if oversize {
        let padding = "x".repeat(sim.config().ebay.oversize_bytes as usize);
        body["warnings"] = json!([{"errorId": 0, "message": padding}]);
    }
    Json(body).into_response()
}

/// `href`, `next` and `prev` of a page: `base_query` is empty or ends with `&`.
pub(super) fn page_links(
    url: &str,
    base_query: &str,
    total: u64,
    limit: u64,
    offset: u64,
) -> (String, Option<String>, Option<String>) {
    let link = |offset: u64| format!("{url}?{base_query}limit={limit}&offset={offset}");
    let href = link(offset);
    let next_offset = offset.saturating_add(limit);
    let next = (next_offset < total).then(|| link(next_offset));
    let prev = (offset > 0).then(|| link(offset.saturating_sub(limit)));
    (href, next, prev)
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved characters and
/// the `:` and `,` eBay leaves readable in its filters (`[` → `%5B`, `]` → `%5D`).
pub(super) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:,".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_total_moves_on_every_page_and_never_runs_dry() {
        let asked = |offset| Asked {
            from_ms: None,
            to_ms: None,
            limit: 50,
            offset,
            unfiltered: false,
        };
        let items: Vec<u32> = (0..7).collect();
        let (first, page) = growing_page_of(items.clone(), &asked(0));
        assert_eq!(page.len(), 50);
        let (second, page) = growing_page_of(items.clone(), &asked(50));
        assert_eq!(page.len(), 50);
        assert!(second > first && second > 100);
        let (last, page) = growing_page_of(items, &asked(u64::MAX));
        assert_eq!((last, page.len()), (u64::MAX, 50));
    }

    /// Regression (issue 14 audit): links kept `filter` only, so a getPayouts `sort` or
    /// getOrders `orderIds` was lost on the next page.
    #[test]
    fn links_keep_every_parameter_of_the_request() {
        let query: HashMap<String, String> = [
            ("sort", "-payoutDate"),
            ("filter", "payoutDate:[2026-11-01T00:00:00.000Z..]"),
            ("limit", "2"),
            ("offset", "2"),
            ("orderIds", "01-20000-00001,01-20000-00002"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
        let asked = Asked {
            from_ms: None,
            to_ms: None,
            limit: 2,
            offset: 2,
            unfiltered: false,
        };
        let body = offset_page(
            "http://127.0.0.1:9",
            "/p",
            &query,
            &asked,
            9,
            "items",
            vec![],
        );
        let kept = "filter=payoutDate:%5B2026-11-01T00:00:00.000Z..%5D&orderIds=01-20000-00001,01-20000-00002&sort=-payoutDate&limit=2";
        assert_eq!(
            body["href"],
            format!("http://127.0.0.1:9/p?{kept}&offset=2")
        );
        assert_eq!(
            body["next"],
            format!("http://127.0.0.1:9/p?{kept}&offset=4")
        );
        assert_eq!(
            body["prev"],
            format!("http://127.0.0.1:9/p?{kept}&offset=0")
        );
    }

    #[test]
    fn links_are_absolute_and_encoded() {
        let (href, next, prev) = page_links(
            "http://127.0.0.1:9/sell/fulfillment/v1/order",
            &format!(
                "filter={}&",
                percent_encode("lastmodifieddate:[2026-11-23T00:00:00.000Z..]")
            ),
            120,
            50,
            50,
        );
        assert_eq!(
            href,
            "http://127.0.0.1:9/sell/fulfillment/v1/order?filter=lastmodifieddate:%5B2026-11-23T00:00:00.000Z..%5D&limit=50&offset=50"
        );
        assert!(next.is_some_and(|next| next.ends_with("&offset=100")));
        assert!(prev.is_some_and(|prev| prev.ends_with("&offset=0")));
    }
}
