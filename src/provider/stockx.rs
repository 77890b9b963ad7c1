//! The StockX API v2 client: the OAuth refresh-token grant (token cached until a minute
//! before it expires) and the market data of one product variant.
//!
//! Calls: `POST {token_url}` (form: `grant_type=refresh_token`, `client_id`,
//! `client_secret`, `audience=gateway.stockx.com`, `refresh_token`) and
//! `GET {api_base}/v2/catalog/products/{productId}/variants/{variantId}/market-data?currencyCode=USD`
//! with `Authorization: Bearer` and `x-api-key`. marketsync keys jobs by style id (SKU) and
//! size and passes them as productId and variantId; the bundled simulator answers by those
//! (see docs/jobs.md for what a production catalog lookup would add).
//!
//! Errors are [`ProviderError`]s: 429 `QuotaExceeded` (with `Retry-After`), 401/403 `Auth`
//! (after one token refresh and retry), 404 `NotFound`, other statuses `Http`. The client
//! secret, refresh token, access token and api key never appear in errors or logs.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tracing::debug;

use super::{
    clip, error_for_status, invalid, read_capped, read_error_body, transport_error, CachedToken,
    ProviderError, TokenCache, MAX_JSON_BODY,
};

/// The operation name for quota buckets, metrics and fault schedules.
pub const OP_MARKET_DATA: &str = "marketData";
const OP_TOKEN: &str = "stockxToken";
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

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

/// The market of one variant. Amounts are in `currency`; `None` when the market has none.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketData {
    pub lowest_ask: Option<f64>,
    pub highest_bid: Option<f64>,
    pub last_sale: Option<f64>,
    pub currency: String,
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
    last_sale_amount: Option<Amount>,
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
                .map_err(|_| format!("amount {text:?} is not a number"))?,
        };
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(format!("amount {value} is out of range"))
        }
    }
}

fn amount(value: &Option<Amount>) -> Result<Option<f64>, String> {
    value.as_ref().map(Amount::value).transpose()
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

    /// The market of `sku` (productId) in `size` (variantId). A 401/403 refreshes the
    /// token and retries once; a second refusal is [`ProviderError::Auth`].
    pub async fn market_data(&self, sku: &str, size: &str) -> Result<MarketData, ProviderError> {
        let mut url = reqwest::Url::parse(&self.endpoints.api_base).map_err(|err| {
            ProviderError::InvalidResponse {
                operation: OP_MARKET_DATA,
                message: format!("api base url: {err}"),
            }
        })?;
        url.path_segments_mut()
            .map_err(|_| ProviderError::InvalidResponse {
                operation: OP_MARKET_DATA,
                message: "api base url cannot have a path".to_string(),
            })?
            .pop_if_empty()
            .extend([
                "v2",
                "catalog",
                "products",
                sku,
                "variants",
                size,
                "market-data",
            ]);
        url.query_pairs_mut().append_pair("currencyCode", "USD");
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
                .map_err(|err| transport_error(OP_MARKET_DATA, err))?;
            let status = response.status();
            if status.is_success() {
                let body = read_capped(response, OP_MARKET_DATA, MAX_JSON_BODY, "").await?;
                let parsed: MarketDataBody = serde_json::from_slice(&body)
                    .map_err(|err| invalid(OP_MARKET_DATA, &format!("market data: {err}")))?;
                let invalid = |message: String| ProviderError::InvalidResponse {
                    operation: OP_MARKET_DATA,
                    message,
                };
                return Ok(MarketData {
                    lowest_ask: amount(&parsed.lowest_ask_amount).map_err(invalid)?,
                    highest_bid: amount(&parsed.highest_bid_amount).map_err(invalid)?,
                    last_sale: amount(&parsed.last_sale_amount).map_err(invalid)?,
                    currency: parsed.currency_code.unwrap_or_else(|| "USD".to_string()),
                });
            }
            let headers = response.headers().clone();
            let body = read_error_body(response).await;
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if !refreshed => {
                    debug!(
                        status = status.as_u16(),
                        "stockx refused the access token; refreshing it once"
                    );
                    self.token.forget(&token).await;
                    refreshed = true;
                }
                StatusCode::NOT_FOUND => {
                    return Err(ProviderError::NotFound {
                        operation: OP_MARKET_DATA,
                        message: format!("no product {sku:?} with size {size:?}"),
                    })
                }
                _ => {
                    return Err(error_for_status(
                        OP_MARKET_DATA,
                        status,
                        &headers,
                        clip(&body),
                        "check the account's api key and OAuth variables",
                    ))
                }
            }
        }
    }
}
