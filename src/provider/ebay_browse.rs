//! eBay market prices from the Browse API: one `item_summary/search` per lookup, with the
//! application's own token (client-credentials grant, scope
//! `https://api.ebay.com/oauth/api_scope`), and the price statistics of the active
//! fixed-price listings it returns (docs/ebay-wire.md, "Browse API").
//!
//! - Request: `GET /buy/browse/v1/item_summary/search` with `gtin=` (a key of 8 to 14
//!   digits: eBay searches UPCs) or `q=` (keywords; a size is AND-ed as `q=KEYWORDS,SIZE`:
//!   eBay reads a comma as AND), `filter=buyingOptions:{FIXED_PRICE}` (an auction's price
//!   is a bid, not an ask), `limit=200` (eBay's largest page), `offset=0`, and
//!   `X-EBAY-C-MARKETPLACE-ID`.
//! - Bounds: one page only, at most [`MAX_ITEMS`] items read (more are ignored and
//!   counted); a body above 1 MiB is refused; a price is used when it is a decimal
//!   number above 0 and at most [`MAX_PRICE`] with a three-letter currency; the others
//!   are counted as rejected. `total` must be a whole number >= 0 and is capped at
//!   [`MAX_TOTAL`].
//! - Statistics (count, min, median, mean, max) are over the prices in one currency:
//!   the one most listings use (ties: alphabetical); listings in others are counted.
//! - No listing at all (`total` 0): [`BrowseOutcome::NoListings`] (the job ends
//!   `not_found`). Listings but no usable price: `InvalidResponse` (retried like a 5xx).
//!
//! Errors are [`ProviderError`]s as the shared eBay client maps them (429 with errorId
//! 2001 `QuotaExceeded`, 401/403 `Auth` after one token refresh).

use std::collections::BTreeMap;

use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::Value;
use tracing::warn;

use super::ebay::{EbayClient, EbayCredentials, EbayEndpoints};
use super::{invalid, read_capped, ProviderError, MAX_JSON_BODY};

/// The operation name for quota buckets, metrics and fault schedules.
pub const OP_SEARCH: &str = "itemSummarySearch";
/// The Browse API's item search path.
pub const SEARCH_PATH: &str = "/buy/browse/v1/item_summary/search";
/// Items asked for and read: eBay's largest page (`limit` 1 to 200).
pub const MAX_ITEMS: usize = 200;
/// The highest price used (in the listing's currency); above it a price is rejected.
pub const MAX_PRICE: f64 = 10_000_000.0;
/// The largest `total` kept (eBay serves at most 10,000 of a result set anyway).
pub const MAX_TOTAL: i64 = 100_000_000;
/// The filter every search carries.
pub const FIXED_PRICE_FILTER: &str = "buyingOptions:{FIXED_PRICE}";

/// The statistics of one search.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowseStats {
    pub count: i64,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
    pub currency: String,
    /// eBay's `total` (capped at [`MAX_TOTAL`]).
    pub total: i64,
    /// Items with no usable price.
    pub rejected: usize,
    /// Items in another currency than `currency`.
    pub other_currency: usize,
    /// Items beyond [`MAX_ITEMS`], not read.
    pub ignored: usize,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub enum BrowseOutcome {
    Stats(BrowseStats),
    /// No active listing matched.
    NoListings,
}

/// How the key is searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseQuery {
    /// `gtin=` (the size is not sent: a UPC names one size already).
    Gtin(String),
    /// `q=`.
    Keywords(String),
}

impl BrowseQuery {
    /// A key of 8 to 14 digits is a GTIN; anything else is keywords, with the size (when
    /// given) AND-ed as `KEYWORDS,SIZE`.
    pub fn of(sku: &str, size: Option<&str>) -> BrowseQuery {
        let sku = sku.trim();
        if (8..=14).contains(&sku.len()) && sku.chars().all(|c| c.is_ascii_digit()) {
            return BrowseQuery::Gtin(sku.to_string());
        }
        match size.map(str::trim).filter(|size| !size.is_empty()) {
            Some(size) => BrowseQuery::Keywords(format!("{sku},{size}")),
            None => BrowseQuery::Keywords(sku.to_string()),
        }
    }

    fn pair(&self) -> (&'static str, &str) {
        match self {
            BrowseQuery::Gtin(gtin) => ("gtin", gtin),
            BrowseQuery::Keywords(keywords) => ("q", keywords),
        }
    }
}

/// The fields of `SearchPagedCollection` read; items stay untyped so one malformed item
/// is rejected alone.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    #[serde(default)]
    total: Option<Value>,
    #[serde(default)]
    item_summaries: Option<Vec<Value>>,
}

/// A Browse API client using the application token of one eBay application.
#[derive(Debug)]
pub struct EbayBrowseClient {
    ebay: EbayClient,
}

impl EbayBrowseClient {
    /// `client_id`/`client_secret`: the eBay application's keys (no seller token: the
    /// client-credentials grant); `marketplace`: `X-EBAY-C-MARKETPLACE-ID`.
    pub fn new(
        http: reqwest::Client,
        endpoints: EbayEndpoints,
        client_id: String,
        client_secret: String,
        marketplace: &str,
    ) -> EbayBrowseClient {
        EbayBrowseClient {
            ebay: EbayClient::new(
                http,
                endpoints,
                EbayCredentials {
                    client_id,
                    client_secret,
                    refresh_token: None,
                },
                marketplace,
            ),
        }
    }

    /// The statistics of the active fixed-price listings matching `sku` (and `size`).
    pub async fn search(
        &self,
        sku: &str,
        size: Option<&str>,
    ) -> Result<BrowseOutcome, ProviderError> {
        let query = BrowseQuery::of(sku, size);
        let (name, value) = query.pair();
        let limit = MAX_ITEMS.to_string();
        let response = self
            .ebay
            .send_authorized(OP_SEARCH, |http, base, token| {
                http.get(format!("{base}{SEARCH_PATH}"))
                    .query(&[
                        (name, value),
                        ("filter", FIXED_PRICE_FILTER),
                        ("limit", limit.as_str()),
                        ("offset", "0"),
                    ])
                    .bearer_auth(token)
                    .header(ACCEPT, "application/json")
            })
            .await
            .map_err(|err| match err {
                ProviderError::Auth { operation, message } => ProviderError::Auth {
                    operation,
                    message: format!(
                        "{message} (the Browse API takes the application token: check the account's client id and secret variables)"
                    ),
                },
                other => other,
            })?;
        let body = read_capped(response, OP_SEARCH, MAX_JSON_BODY, "").await?;
        let outcome = statistics(&body)?;
        if let BrowseOutcome::Stats(stats) = &outcome {
            if stats.rejected > 0 || stats.ignored > 0 || stats.other_currency > 0 {
                warn!(
                    sku,
                    rejected = stats.rejected,
                    ignored = stats.ignored,
                    other_currency = stats.other_currency,
                    used = stats.count,
                    "ebay listings left out of the statistics"
                );
            }
        }
        Ok(outcome)
    }
}

/// The statistics of a search answer (see the module doc for the bounds).
pub fn statistics(body: &[u8]) -> Result<BrowseOutcome, ProviderError> {
    let page: SearchPage = serde_json::from_slice(body)
        .map_err(|err| invalid(OP_SEARCH, &format!("item search: {err}")))?;
    let total = match &page.total {
        None => None,
        Some(value) => {
            let total = value.as_i64().filter(|total| *total >= 0).ok_or_else(|| {
                invalid(
                    OP_SEARCH,
                    &format!("total {} is not a whole number >= 0", clip_json(value)),
                )
            })?;
            Some(total.min(MAX_TOTAL))
        }
    };
    let items = page.item_summaries.unwrap_or_default();
    if items.is_empty() {
        return if total.unwrap_or(0) == 0 {
            Ok(BrowseOutcome::NoListings)
        } else {
            Err(invalid(
                OP_SEARCH,
                "total is above 0 but the page holds no itemSummaries",
            ))
        };
    }
    let ignored = items.len().saturating_sub(MAX_ITEMS);
    let mut rejected = 0;
    let mut by_currency: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for item in items.iter().take(MAX_ITEMS) {
        match price_of(item) {
            Some((value, currency)) => by_currency.entry(currency).or_default().push(value),
            None => rejected += 1,
        }
    }
    let read = items.len() - ignored;
    // The currency most listings use; ties go to the alphabetically first.
    let Some((currency, mut prices)) = by_currency
        .into_iter()
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(&a.0)))
    else {
        return Err(invalid(
            OP_SEARCH,
            &format!("none of the {read} listings read has a usable price"),
        ));
    };
    let other_currency = read - rejected - prices.len();
    prices.sort_by(f64::total_cmp);
    let count = prices.len();
    let middle = count / 2;
    let median = if count % 2 == 1 {
        prices[middle]
    } else {
        (prices[middle - 1] + prices[middle]) / 2.0
    };
    // At most 200 prices of at most 1e7 each: the sum cannot overflow.
    let mean = prices.iter().sum::<f64>() / count as f64;
    let count = count as i64;
    Ok(BrowseOutcome::Stats(BrowseStats {
        count,
        min: prices[0],
        median,
        mean,
        max: prices[prices.len() - 1],
        currency,
        total: total.unwrap_or(count).max(count),
        rejected,
        other_currency,
        ignored,
    }))
}

/// `price.value` and `price.currency` of an item summary, when usable: a decimal string
/// (or number) above 0 and at most [`MAX_PRICE`], and a three-letter currency code.
fn price_of(item: &Value) -> Option<(f64, String)> {
    let price = item.get("price")?;
    let value = match price.get("value")? {
        Value::String(text) => text.trim().parse::<f64>().ok()?,
        Value::Number(number) => number.as_f64()?,
        _ => return None,
    };
    let currency = price.get("currency")?.as_str()?;
    let currency_ok = currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase());
    (value.is_finite() && value > 0.0 && value <= MAX_PRICE && currency_ok)
        .then(|| (value, currency.to_string()))
}

fn clip_json(value: &Value) -> String {
    value.to_string().chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(body: &str) -> BrowseStats {
        match statistics(body.as_bytes()).expect("statistics") {
            BrowseOutcome::Stats(stats) => stats,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_gtin_is_searched_as_one_and_keywords_get_the_size() {
        assert_eq!(
            BrowseQuery::of("0194502876093", Some("10")),
            BrowseQuery::Gtin("0194502876093".into())
        );
        assert_eq!(
            BrowseQuery::of("DD1391-100", Some("10")),
            BrowseQuery::Keywords("DD1391-100,10".into())
        );
        assert_eq!(
            BrowseQuery::of("1234567", None),
            BrowseQuery::Keywords("1234567".into())
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let body = r#"{"total": 4, "itemSummaries": [
            {"price": {"value": "40.00", "currency": "USD"}},
            {"price": {"value": "10.00", "currency": "USD"}},
            {"price": {"value": "30.00", "currency": "USD"}},
            {"price": {"value": "20.00", "currency": "USD"}}]}"#;
        let stats = stats(body);
        assert_eq!(
            (stats.count, stats.min, stats.median, stats.mean, stats.max),
            (4, 10.0, 25.0, 25.0, 40.0)
        );
    }

    #[test]
    fn hostile_prices_are_rejected_one_by_one() {
        let body = r#"{"total": 9, "itemSummaries": [
            {"price": {"value": "-5", "currency": "USD"}},
            {"price": {"value": "1e308", "currency": "USD"}},
            {"price": {"value": "abc", "currency": "USD"}},
            {"price": {"value": "NaN", "currency": "USD"}},
            {"price": {"value": "12.5", "currency": "usd"}},
            {"price": {"value": [1], "currency": "USD"}},
            {"title": "no price"},
            {"price": {"value": "7", "currency": "GBP"}},
            {"price": {"value": "13.5", "currency": "USD"}},
            {"price": {"value": "12.5", "currency": "USD"}}]}"#;
        let stats = stats(body);
        assert_eq!(
            (stats.count, stats.rejected, stats.other_currency),
            (2, 7, 1)
        );
        assert_eq!(
            (stats.min, stats.max, stats.currency.as_str()),
            (12.5, 13.5, "USD")
        );
        // A tie goes to the alphabetically first currency.
        let tie = stats_of_tie();
        assert_eq!(
            (tie.currency.as_str(), tie.count, tie.other_currency),
            ("GBP", 1, 1)
        );
    }

    fn stats_of_tie() -> BrowseStats {
        stats(
            r#"{"itemSummaries": [{"price": {"value": "9", "currency": "USD"}},
                                    {"price": {"value": "7", "currency": "GBP"}}]}"#,
        )
    }

    #[test]
    fn nothing_usable_or_a_bad_total_is_an_invalid_answer() {
        assert!(statistics(
            br#"{"total": 1, "itemSummaries": [{"price": {"value": "x", "currency": "USD"}}]}"#
        )
        .is_err());
        assert!(statistics(br#"{"total": -1}"#).is_err());
        assert!(statistics(br#"{"total": 1.5}"#).is_err());
        assert!(statistics(br#"{"total": 3}"#).is_err());
        assert_eq!(
            statistics(br#"{"total": 0}"#).expect("empty"),
            BrowseOutcome::NoListings
        );
    }
}
