//! The Alias API's wire format, in one file so that it can be corrected without touching
//! the client's flow or the queue (docs/jobs.md, "Alias": what is verified, what assumed).
//!
//! Source: the Alias API reference as transcribed in public clients of
//! `https://api.alias.org/api/v1` (docs/jobs.md cites them): personal access tokens as
//! `Authorization: Bearer`, `GET /api/v1/catalog?query=&limit=` answering
//! `{catalog_items: [{catalog_id, sku, allowed_sizes: [{display_name, value,
//! us_size_equivalent}], ...}], next_pagination_token, has_more}`, and
//! `GET /api/v1/pricing_insights/availability?catalog_id&size&product_condition&packaging_condition[&region_id]`
//! answering `{availability: {lowest_listing_price_cents, highest_offer_price_cents,
//! last_sold_listing_price_cents, global_indicator_price_cents}}`, amounts as strings of
//! USD cents. The error body is assumed to be gRPC-gateway's `{code, message, details}`
//! (the API's enums and its `string($int64)` limits are gRPC-gateway's signature).
//!
//! Every number is bounded here: prices within [`MAX_CENTS`], at most
//! [`MAX_CATALOG_ITEMS`] catalog items and [`MAX_ALLOWED_SIZES`] sizes per item read.

use serde::Deserialize;

/// Path of SearchCatalog.
pub const CATALOG_PATH: &str = "/api/v1/catalog";
/// Path of GetPricingInsights (one variant: catalog id, size, conditions).
pub const AVAILABILITY_PATH: &str = "/api/v1/pricing_insights/availability";
/// The catalog page asked for: the match is expected among the first few results.
pub const CATALOG_LIMIT: &str = "10";
/// The conditions marketsync prices: new, in a good original box (the market a reseller
/// quotes; other conditions are separate variants at Alias).
pub const PRODUCT_CONDITION: &str = "PRODUCT_CONDITION_NEW";
pub const PACKAGING_CONDITION: &str = "PACKAGING_CONDITION_GOOD_CONDITION";
/// Alias quotes every region in US dollars.
pub const CURRENCY: &str = "USD";
/// The marketplace value that sends no `region_id` (prices across all regions).
pub const GLOBAL_REGION: &str = "global";

/// The largest price accepted: $100,000,000.00 in cents. Above it the answer is refused.
pub const MAX_CENTS: f64 = 1e10;
/// Catalog items read from one search page (the rest are ignored).
pub const MAX_CATALOG_ITEMS: usize = 50;
/// Allowed sizes read per catalog item.
pub const MAX_ALLOWED_SIZES: usize = 200;
/// The largest size value accepted (US sizes are small numbers).
pub const MAX_SIZE: f64 = 100.0;
/// The longest catalog id accepted (the simulator's and the reference's are short).
pub const MAX_CATALOG_ID: usize = 256;

/// SearchCatalog's answer (the fields marketsync reads).
#[derive(Debug, Deserialize)]
pub struct CatalogPage {
    #[serde(default)]
    pub catalog_items: Vec<CatalogItem>,
}

/// One catalog item.
#[derive(Debug, Deserialize)]
pub struct CatalogItem {
    pub catalog_id: String,
    /// Alias writes style ids with a space (`DD1391 100`).
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub allowed_sizes: Vec<AllowedSize>,
}

/// A size the item is listed in; pricing insights take `us_size_equivalent`.
#[derive(Debug, Deserialize)]
pub struct AllowedSize {
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub us_size_equivalent: Option<f64>,
}

/// GetPricingInsights' answer.
#[derive(Debug, Deserialize)]
pub struct AvailabilityAnswer {
    pub availability: Availability,
}

/// Amounts in USD cents, as strings (numbers are accepted too).
#[derive(Debug, Deserialize)]
pub struct Availability {
    #[serde(default)]
    pub lowest_listing_price_cents: Option<Cents>,
    #[serde(default)]
    pub highest_offer_price_cents: Option<Cents>,
    #[serde(default)]
    pub last_sold_listing_price_cents: Option<Cents>,
    #[serde(default)]
    pub global_indicator_price_cents: Option<Cents>,
}

/// A cents amount: `"25000"` as Alias sends it, or a number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Cents {
    Number(f64),
    Text(String),
}

impl Cents {
    /// The amount in dollars; `None` for `0` (Alias's "no price"); an error for a value
    /// that is not a number, negative, or above [`MAX_CENTS`].
    pub fn dollars(&self, field: &str) -> Result<Option<f64>, String> {
        let cents = match self {
            Cents::Number(value) => *value,
            Cents::Text(text) if text.trim().is_empty() => return Ok(None),
            Cents::Text(text) => text
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{field} {:?} is not a number of cents", clip_value(text)))?,
        };
        if !cents.is_finite() || !(0.0..=MAX_CENTS).contains(&cents) {
            return Err(format!(
                "{field} {cents} is out of range (0 to {MAX_CENTS} cents)"
            ));
        }
        Ok((cents > 0.0).then_some(cents / 100.0))
    }
}

/// An optional amount in dollars.
pub fn dollars(value: &Option<Cents>, field: &str) -> Result<Option<f64>, String> {
    match value {
        None => Ok(None),
        Some(cents) => cents.dollars(field),
    }
}

/// The error body (assumed gRPC-gateway status): `{code, message, details}`.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
}

/// The message of an error body, or the body itself when it is not that shape.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|parsed| parsed.message)
        .unwrap_or_else(|| body.to_string())
}

/// A style id as compared: letters and digits only, upper-cased, so `DD1391-100`,
/// `dd1391 100` and `DD1391100` are one SKU (Alias writes `DD1391 100`).
pub fn sku_key(sku: &str) -> String {
    sku.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The US sizes an item is priced in (`us_size_equivalent`, else `value`), bounded.
pub fn us_sizes(item: &CatalogItem) -> Vec<f64> {
    item.allowed_sizes
        .iter()
        .take(MAX_ALLOWED_SIZES)
        .filter_map(|size| size.us_size_equivalent.or(size.value))
        .filter(|size| size.is_finite() && *size > 0.0 && *size <= MAX_SIZE)
        .collect()
}

/// A job's size as the US size number pricing insights take; `None` when it is not a
/// number in (0, [`MAX_SIZE`]].
pub fn parse_size(size: &str) -> Option<f64> {
    size.trim()
        .parse::<f64>()
        .ok()
        .filter(|value| value.is_finite() && *value > 0.0 && *value <= MAX_SIZE)
}

/// The `size` query value for a US size: its shortest decimal form (`10`, `10.5`).
pub fn size_param(size: f64) -> String {
    format!("{size}")
}

fn clip_value(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_are_bounded_and_zero_means_none() {
        assert_eq!(Cents::Text("25000".into()).dollars("x"), Ok(Some(250.0)));
        assert_eq!(Cents::Number(1999.0).dollars("x"), Ok(Some(19.99)));
        assert_eq!(Cents::Text("0".into()).dollars("x"), Ok(None));
        assert_eq!(Cents::Text(" ".into()).dollars("x"), Ok(None));
        assert!(Cents::Text("-5".into()).dollars("x").is_err());
        assert!(Cents::Text("12abc".into()).dollars("x").is_err());
        assert!(Cents::Text("1e300".into()).dollars("x").is_err());
        assert!(Cents::Text("NaN".into()).dollars("x").is_err());
    }

    #[test]
    fn skus_compare_without_separators_or_case() {
        assert_eq!(sku_key("DD1391-100"), sku_key("dd1391 100"));
        assert_ne!(sku_key("DD1391-100"), sku_key("DD1391-100 GS"));
    }

    #[test]
    fn sizes_prefer_the_us_equivalent_and_drop_nonsense() {
        let item: CatalogItem = serde_json::from_str(
            r#"{"catalog_id":"x","allowed_sizes":[{"value":42,"us_size_equivalent":8.5},{"value":10},{"value":-1},{"value":1e9}]}"#,
        )
        .expect("item");
        assert_eq!(us_sizes(&item), vec![8.5, 10.0]);
        assert_eq!(size_param(10.0), "10");
        assert_eq!(size_param(10.5), "10.5");
        assert_eq!(parse_size(" 10.5 "), Some(10.5));
        for bad in ["XL", "-3", "0", "NaN", "inf", "101", ""] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
