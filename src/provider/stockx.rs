//! The StockX public API v2 client: the OAuth refresh-token grant (token cached until a
//! minute before it expires), the catalog (search by style id, a product's variants) and
//! the market data of one product variant.
//!
//! StockX addresses products and variants by catalog UUID (developer.stockx.com, the
//! public OpenAPI `swagger.json`, operations `Search`, `GetVariants`,
//! `GetVariantMarketData`):
//! - `GET {api_base}/v2/catalog/search?query=STYLE&pageNumber=1&pageSize=20` →
//!   `{count, pageSize, pageNumber, hasNextPage, products: [{productId, styleId, title,
//!   ...}]}`; the product whose `styleId` equals the style id (case-insensitive) is the one;
//! - `GET {api_base}/v2/catalog/products/{productId}/variants` → `[{productId, variantId,
//!   variantName, variantValue, sizeChart: {defaultConversion, availableConversions:
//!   [{size, type}]}, gtins, isFlexEligible, isDirectEligible}]`;
//! - `GET {api_base}/v2/catalog/products/{productId}/variants/{variantId}/market-data?currencyCode=USD`
//!   → `{productId, variantId, currencyCode, lowestAskAmount, highestBidAmount,
//!   sellFasterAmount, earnMoreAmount, flexLowestAskAmount, ...}` (amounts are strings or
//!   null). There is no last sale in it.
//!
//! Every call carries `Authorization: Bearer` and `x-api-key`. Errors are StockX's
//! `PublicApiError` (`{"statusCode", "message"}`) and become [`ProviderError`]s: 429
//! `QuotaExceeded` (with `Retry-After`), 401/403 `Auth` (after one token refresh and
//! retry), 404 and 400 on a product or variant path `NotFound` (a product that is gone;
//! StockX's validation error for a variant that does not belong to the product), other
//! statuses `Http`. The client secret, refresh token, access token and api key never
//! appear in errors or logs.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use super::{
    clip, error_for_status, invalid, read_capped, read_error_body, transport_error, CachedToken,
    ProviderError, TokenCache, MAX_JSON_BODY,
};

/// The operation name for quota buckets, metrics and fault schedules. Every StockX call
/// (catalog too) is paced by this operation's bucket: StockX has one budget per api key.
pub const OP_MARKET_DATA: &str = "marketData";
/// `GET /v2/catalog/search` (metrics and fault schedules).
pub const OP_CATALOG_SEARCH: &str = "catalogSearch";
/// `GET /v2/catalog/products/{productId}/variants` (metrics and fault schedules).
pub const OP_CATALOG_VARIANTS: &str = "catalogVariants";
const OP_TOKEN: &str = "stockxToken";
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Products asked per search page (StockX accepts 1 to 50). A style id matches few
/// products; the exact one is on the first page.
pub const SEARCH_PAGE_SIZE: u32 = 20;
/// The most variants accepted for one product (sneakers have ~30, graded cards more); a
/// longer list is refused as invalid rather than stored.
pub const MAX_VARIANTS: usize = 2000;
/// The longest catalog id (UUID: 36) or size text accepted from StockX.
const MAX_ID_CHARS: usize = 64;
/// The longest style id StockX's search accepts (`query`: 1 to 100 characters).
pub const MAX_QUERY_CHARS: usize = 100;

/// Where the client's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockxEndpoints {
    pub api_base: String,
    pub token_url: String,
}

/// The account's credentials. `Debug` redacts every value.
#[derive(Clone)]
pub struct StockxCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub api_key: String,
}

impl std::fmt::Debug for StockxCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StockxCredentials { <redacted> }")
    }
}

/// The market of one variant, as StockX's market data carries it. Amounts are in
/// `currency`; `None` when the market has none (StockX sends `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct MarketData {
    pub lowest_ask: Option<f64>,
    pub highest_bid: Option<f64>,
    /// The price to list at to become the lowest ask.
    pub sell_faster: Option<f64>,
    /// The price that maximises earnings while staying competitive.
    pub earn_more: Option<f64>,
    /// The Flex program's lowest ask.
    pub flex_lowest_ask: Option<f64>,
    pub currency: String,
}

/// The catalog product a style id resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogProduct {
    pub product_id: String,
    pub style_id: String,
    pub title: Option<String>,
}

/// One variant (size) of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogVariant {
    pub variant_id: String,
    /// StockX's `variantValue` (for sneakers the size in the default chart, e.g. `10`).
    pub variant_value: Option<String>,
    /// The sizes of `sizeChart` (`US M 10`, `UK 9`, `EU 44`, ...), default first.
    pub sizes: Vec<String>,
}

impl CatalogVariant {
    /// The keys a job's size may name this variant by ([`size_key`] of the variant value
    /// and of every size-chart entry), the variant value first.
    pub fn size_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for text in self.variant_value.iter().chain(self.sizes.iter()) {
            let key = size_key(text);
            if !key.is_empty() && !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }
}

/// How a size is compared: trimmed, lower-case, inner whitespace collapsed (`UK  9` and
/// `uk 9` are the same size).
pub fn size_key(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A StockX client with a cached access token.
pub struct StockxClient {
    http: reqwest::Client,
    endpoints: StockxEndpoints,
    credentials: StockxCredentials,
    /// One refresh at a time; the token and when to refresh it.
    token: TokenCache,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarketDataBody {
    #[serde(default)]
    currency_code: Option<String>,
    #[serde(default)]
    lowest_ask_amount: Option<Amount>,
    #[serde(default)]
    highest_bid_amount: Option<Amount>,
    #[serde(default)]
    sell_faster_amount: Option<Amount>,
    #[serde(default)]
    earn_more_amount: Option<Amount>,
    #[serde(default)]
    flex_lowest_ask_amount: Option<Amount>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchBody {
    products: Vec<SearchProduct>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchProduct {
    product_id: String,
    #[serde(default)]
    style_id: Option<String>,
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VariantBody {
    variant_id: String,
    #[serde(default)]
    variant_value: Option<String>,
    #[serde(default)]
    size_chart: Option<SizeChart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SizeChart {
    #[serde(default)]
    default_conversion: Option<SizeConversion>,
    #[serde(default)]
    available_conversions: Vec<SizeConversion>,
}

#[derive(Deserialize)]
struct SizeConversion {
    #[serde(default)]
    size: Option<String>,
}

/// StockX's error document (`PublicApiError`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicApiError {
    #[serde(default)]
    message: Option<String>,
    /// Some gateways answer `errorMessage`; read it too.
    #[serde(default)]
    error_message: Option<String>,
}

/// The message of an error body, clipped: `message` of StockX's `PublicApiError`, or the
/// body itself.
fn error_text(body: &str) -> String {
    serde_json::from_str::<PublicApiError>(body)
        .ok()
        .and_then(|error| error.message.or(error.error_message))
        .map(|message| clip(&message))
        .unwrap_or_else(|| clip(body))
}

/// StockX sends amounts as strings ("185"); numbers are accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(f64),
    Text(String),
}

impl Amount {
    fn value(&self) -> Result<f64, String> {
        let value = match self {
            Amount::Number(value) => *value,
            Amount::Text(text) => text
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("amount {:?} is not a number", clip(text)))?,
        };
        // No sneaker trades above a billion; anything beyond is a broken answer.
        if value.is_finite() && (0.0..1e9).contains(&value) {
            Ok(value)
        } else {
            Err(format!("amount {value} is out of range"))
        }
    }
}

fn amount(value: &Option<Amount>) -> Result<Option<f64>, String> {
    value.as_ref().map(Amount::value).transpose()
}

/// A catalog id from StockX: 1 to 64 letters, digits and `-` (a UUID), or why not.
fn catalog_id(operation: &'static str, what: &str, id: &str) -> Result<String, ProviderError> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(id.to_string())
    } else {
        Err(invalid(
            operation,
            &format!("{what} {:?} is not a catalog id", clip(id)),
        ))
    }
}

/// A size text from StockX, kept only when it is short enough to be one.
fn size_text(text: Option<String>) -> Option<String> {
    text.map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty() && text.chars().count() <= MAX_ID_CHARS)
}

impl StockxClient {
    pub fn new(
        http: reqwest::Client,
        endpoints: StockxEndpoints,
        credentials: StockxCredentials,
    ) -> StockxClient {
        StockxClient {
            http,
            endpoints,
            credentials,
            token: TokenCache::default(),
        }
    }

    /// A valid access token: the cached one, or a fresh one from the token endpoint.
    async fn access_token(&self) -> Result<String, ProviderError> {
        self.token.get(|| self.fetch_token()).await
    }

    async fn fetch_token(&self) -> Result<CachedToken, ProviderError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.as_str()),
            ("audience", "gateway.stockx.com"),
            ("refresh_token", self.credentials.refresh_token.as_str()),
        ];
        let response = self
            .http
            .post(&self.endpoints.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|err| transport_error(OP_TOKEN, err))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            return Err(match status {
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    ProviderError::Auth {
                        operation: OP_TOKEN,
                        message: format!(
                            "token endpoint refused the credentials (http {}): {}; check the account's client id, secret and refresh token variables",
                            status.as_u16(),
                            clip(&body)
                        ),
                    }
                }
                _ => error_for_status(OP_TOKEN, status, &headers, clip(&body), ""),
            });
        }
        let body = read_capped(response, OP_TOKEN, MAX_JSON_BODY, "").await?;
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_TOKEN, &format!("token response: {err}")))?;
        let lifetime = token
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        debug!(
            expires_in = lifetime.as_secs(),
            "stockx access token refreshed"
        );
        Ok(CachedToken::new(token.access_token, lifetime))
    }

    /// `{api_base}/v2/catalog/{segments...}`, each segment escaped.
    fn url(
        &self,
        operation: &'static str,
        segments: &[&str],
    ) -> Result<reqwest::Url, ProviderError> {
        let mut url = reqwest::Url::parse(&self.endpoints.api_base)
            .map_err(|err| invalid(operation, &format!("api base url: {err}")))?;
        url.path_segments_mut()
            .map_err(|_| invalid(operation, "api base url cannot have a path"))?
            .pop_if_empty()
            .extend(["v2", "catalog"])
            .extend(segments);
        Ok(url)
    }

    /// GETs `url` with the bearer token and api key and returns the body of a 2xx. A
    /// 401/403 refreshes the token and retries once; 404, and 400 when `bad_request_is_not_found`,
    /// are [`ProviderError::NotFound`] with StockX's message.
    async fn get(
        &self,
        operation: &'static str,
        url: reqwest::Url,
        bad_request_is_not_found: bool,
    ) -> Result<Vec<u8>, ProviderError> {
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let response = self
                .http
                .get(url.clone())
                .bearer_auth(&token)
                .header("x-api-key", &self.credentials.api_key)
                .send()
                .await
                .map_err(|err| transport_error(operation, err))?;
            let status = response.status();
            if status.is_success() {
                return read_capped(response, operation, MAX_JSON_BODY, "").await;
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if !refreshed => {
                    debug!(
                        operation,
                        status = status.as_u16(),
                        "stockx refused the access token; refreshing it once"
                    );
                    self.token.forget(&token).await;
                    refreshed = true;
                }
                StatusCode::NOT_FOUND => {
                    return Err(ProviderError::NotFound {
                        operation,
                        message: error_text(&body),
                    })
                }
                StatusCode::BAD_REQUEST if bad_request_is_not_found => {
                    return Err(ProviderError::NotFound {
                        operation,
                        message: format!("validation error: {}", error_text(&body)),
                    })
                }
                _ => {
                    return Err(error_for_status(
                        operation,
                        status,
                        &headers,
                        error_text(&body),
                        "check the account's api key and OAuth variables",
                    ))
                }
            }
        }
    }

    /// The catalog product whose style id is `style` (`GET /v2/catalog/search`), or
    /// `None` when StockX has none: the search answers other products, or nothing.
    pub async fn search_style(&self, style: &str) -> Result<Option<CatalogProduct>, ProviderError> {
        let style = style.trim();
        if style.is_empty() || style.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(
                OP_CATALOG_SEARCH,
                &format!(
                    "style id {:?} must be 1 to {MAX_QUERY_CHARS} characters",
                    clip(style)
                ),
            ));
        }
        let mut url = self.url(OP_CATALOG_SEARCH, &["search"])?;
        url.query_pairs_mut()
            .append_pair("query", style)
            .append_pair("pageNumber", "1")
            .append_pair("pageSize", &SEARCH_PAGE_SIZE.to_string());
        let body = self.get(OP_CATALOG_SEARCH, url, false).await?;
        let parsed: SearchBody = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_CATALOG_SEARCH, &format!("search answer: {err}")))?;
        let wanted = size_key(style);
        for product in parsed.products.into_iter().take(SEARCH_PAGE_SIZE as usize) {
            let Some(style_id) = product.style_id else {
                continue;
            };
            if size_key(&style_id) != wanted {
                continue;
            }
            return Ok(Some(CatalogProduct {
                product_id: catalog_id(OP_CATALOG_SEARCH, "productId", &product.product_id)?,
                style_id: style_id.trim().to_string(),
                title: product.title.map(|title| clip(&title)),
            }));
        }
        Ok(None)
    }

    /// Every variant of `product_id` (`GET /v2/catalog/products/{productId}/variants`).
    /// A product StockX no longer has is [`ProviderError::NotFound`].
    pub async fn variants(&self, product_id: &str) -> Result<Vec<CatalogVariant>, ProviderError> {
        let url = self.url(OP_CATALOG_VARIANTS, &["products", product_id, "variants"])?;
        let body = self.get(OP_CATALOG_VARIANTS, url, true).await?;
        let parsed: Vec<VariantBody> = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_CATALOG_VARIANTS, &format!("variants answer: {err}")))?;
        if parsed.len() > MAX_VARIANTS {
            return Err(invalid(
                OP_CATALOG_VARIANTS,
                &format!(
                    "{} variants for one product; at most {MAX_VARIANTS} are accepted",
                    parsed.len()
                ),
            ));
        }
        parsed
            .into_iter()
            .map(|variant| {
                let mut sizes = Vec::new();
                if let Some(chart) = variant.size_chart {
                    let default = chart.default_conversion.and_then(|c| size_text(c.size));
                    sizes.extend(default);
                    for conversion in chart.available_conversions.into_iter().take(32) {
                        if let Some(size) = size_text(conversion.size) {
                            if !sizes.contains(&size) {
                                sizes.push(size);
                            }
                        }
                    }
                }
                Ok(CatalogVariant {
                    variant_id: catalog_id(OP_CATALOG_VARIANTS, "variantId", &variant.variant_id)?,
                    variant_value: size_text(variant.variant_value),
                    sizes,
                })
            })
            .collect()
    }

    /// The market of variant `variant_id` of product `product_id` in USD. A product that
    /// is gone (404) and a variant that does not belong to the product (StockX's 400
    /// validation error) are [`ProviderError::NotFound`].
    pub async fn market_data(
        &self,
        product_id: &str,
        variant_id: &str,
    ) -> Result<MarketData, ProviderError> {
        let mut url = self.url(
            OP_MARKET_DATA,
            &[
                "products",
                product_id,
                "variants",
                variant_id,
                "market-data",
            ],
        )?;
        url.query_pairs_mut().append_pair("currencyCode", "USD");
        let body = self.get(OP_MARKET_DATA, url, true).await?;
        let parsed: MarketDataBody = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_MARKET_DATA, &format!("market data: {err}")))?;
        let invalid = |message: String| ProviderError::InvalidResponse {
            operation: OP_MARKET_DATA,
            message,
        };
        let currency = parsed
            .currency_code
            .map(|code| code.trim().to_ascii_uppercase())
            .unwrap_or_else(|| "USD".to_string());
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(format!(
                "currency {:?} is not a currency code",
                clip(&currency)
            )));
        }
        Ok(MarketData {
            lowest_ask: amount(&parsed.lowest_ask_amount).map_err(invalid)?,
            highest_bid: amount(&parsed.highest_bid_amount).map_err(invalid)?,
            sell_faster: amount(&parsed.sell_faster_amount).map_err(invalid)?,
            earn_more: amount(&parsed.earn_more_amount).map_err(invalid)?,
            flex_lowest_ask: amount(&parsed.flex_lowest_ask_amount).map_err(invalid)?,
            currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_compare_without_case_or_extra_spaces() {
        assert_eq!(size_key("  UK  9 "), "uk 9");
        let variant = CatalogVariant {
            variant_id: "v".to_string(),
            variant_value: Some("10".to_string()),
            sizes: vec![
                "US M 10".to_string(),
                "UK 9".to_string(),
                "US M 10".to_string(),
            ],
        };
        assert_eq!(variant.size_keys(), vec!["10", "us m 10", "uk 9"]);
    }

    #[test]
    fn catalog_ids_and_amounts_from_stockx_are_bounded() {
        assert!(catalog_id("x", "productId", "35d76ac8-a112-4d75-b44f-c8ef04a87c93").is_ok());
        assert!(catalog_id("x", "productId", "../../etc").is_err());
        assert!(catalog_id("x", "productId", &"a".repeat(65)).is_err());
        assert!(Amount::Text("1e300".to_string()).value().is_err());
        assert!(Amount::Number(f64::NAN).value().is_err());
        assert!(Amount::Number(-1.0).value().is_err());
        assert_eq!(Amount::Text(" 185 ".to_string()).value(), Ok(185.0));
        assert_eq!(
            error_text(r#"{"statusCode":400,"message":"Variant does not belong to the product."}"#),
            "Variant does not belong to the product."
        );
    }
}
