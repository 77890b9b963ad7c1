//! The Keepa API client: `GET /product` for up to 100 ASINs per request, and `GET /token`
//! for the balance alone (api.keepa.com answers both with and without the trailing slash
//! the keepa Python client puts there).
//!
//! Every answer, success or 429, carries the account's token balance (`tokensLeft`, which
//! may be negative, `refillIn` in ms, `refillRate` per minute): it is returned beside the
//! result so the caller can feed it to the TokenManager. Products are judged one by one:
//! a product with its price history (`csv`) and `stats` is [`KeepaProductOutcome::Complete`];
//! one Keepa does not know (`productType` 3 or 4, or no title and no history) is
//! `NotFound`; anything else is `Incomplete` and is never written as data (seed 004's
//! "Missing 1yr Avg" came from partial data applied as complete).
//!
//! Keepa's errors carry the balance too and `error: {type, message, details}`: 429
//! `NOT_ENOUGH_TOKEN` is [`ProviderError::QuotaExceeded`] (waiting for the refill the
//! balance names), 400 `REQUEST_REJECTED` (an unknown key) and 402 `PAYMENT_REQUIRED` are
//! [`ProviderError::Auth`], anything else `Http` (a 404 is a wrong path, never a product:
//! Keepa answers unknown ASINs inside a 200).
//!
//! The api key travels in the query string (as Keepa wants); errors are built without the
//! url, so it never reaches a log or an error message.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{clip, error_for_status, read_error_body, transport_error, ProviderError};

/// The operation name for quota buckets, metrics and fault schedules.
pub const OP_PRODUCT: &str = "product";
const OP_TOKEN: &str = "token";
/// The largest Keepa success body read (a `Content-Length` above it is refused before
/// reading): 100 products with full histories stay well below it.
pub const MAX_KEEPA_BODY: u64 = 32 * 1024 * 1024;
const KEEPA_TOO_BIG: &str = "; lower the stream's batch size (fewer ASINs per request)";
/// Keepa takes at most this many ASINs per product request.
pub const MAX_ASINS: usize = 100;

/// Keepa csv indices (price types).
const CSV_AMAZON: usize = 0;
const CSV_NEW: usize = 1;
const CSV_SALES: usize = 3;

/// The balance a response reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepaBalance {
    /// May be negative: requests are served while the balance is positive and their cost
    /// is subtracted afterwards.
    pub tokens_left: i64,
    pub refill_in_ms: u64,
    pub refill_rate_per_min: f64,
    pub tokens_consumed: i64,
}

impl KeepaBalance {
    /// How long until the balance is positive again (zero when it is).
    pub fn positive_in(&self) -> Duration {
        if self.tokens_left > 0 {
            return Duration::ZERO;
        }
        let rate = if self.refill_rate_per_min > 0.0 {
            self.refill_rate_per_min
        } else {
            1.0
        };
        let missing = 1i64.saturating_sub(self.tokens_left) as f64;
        let minutes_more = (missing / rate).ceil().max(1.0) - 1.0;
        Duration::from_millis(self.refill_in_ms)
            .saturating_add(
                Duration::try_from_secs_f64(minutes_more * 60.0).unwrap_or(super::MAX_RETRY_AFTER),
            )
            .min(super::MAX_RETRY_AFTER)
    }
}

/// A complete product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaProductData {
    pub asin: String,
    pub domain: i64,
    pub title: Option<String>,
    /// Integer cents; `None` when Keepa has no current value (-1).
    pub current_amazon: Option<i64>,
    pub current_new: Option<i64>,
    pub sales_rank: Option<i64>,
    pub avg_90_new: Option<i64>,
    pub avg_365_new: Option<i64>,
    /// Points in the NEW price history.
    pub history_points: i64,
    /// The product JSON as received.
    pub raw: String,
}

/// What one requested ASIN came back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepaProductOutcome {
    Complete(Box<KeepaProductData>),
    /// Keepa does not know the ASIN.
    NotFound(String),
    /// Missing history or stats: not data; retried.
    Incomplete(String),
}

/// Credentials and endpoint of a Keepa account.
#[derive(Clone)]
pub struct KeepaClient {
    http: reqwest::Client,
    api_base: String,
    api_key: String,
    /// Keepa's domain id (1 = amazon.com).
    domain: String,
    /// `stats=` days; 365 gives the one-year average.
    stats_days: u32,
}

impl std::fmt::Debug for KeepaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepaClient")
            .field("api_base", &self.api_base)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    // Numbers as f64 so an absurd one (beyond i64/u64, negative) is clamped, not a parse
    // failure that hides the balance.
    #[serde(default)]
    tokens_left: Option<f64>,
    #[serde(default)]
    refill_in: Option<f64>,
    #[serde(default)]
    refill_rate: Option<f64>,
    #[serde(default)]
    tokens_consumed: Option<f64>,
    #[serde(default)]
    products: Option<Vec<Value>>,
    #[serde(default)]
    error: Option<Value>,
}

impl Envelope {
    fn balance(&self) -> Option<KeepaBalance> {
        Some(bounded_balance(
            self.tokens_left?,
            self.refill_in.unwrap_or(0.0),
            self.refill_rate?,
            self.tokens_consumed.unwrap_or(0.0),
        ))
    }
}

/// A balance as Keepa sent it, bounded (see [`crate::quota::KeepaValues`]): `tokensLeft`
/// within ±1e6, `refillIn` within [0, 1 h], `refillRate` within [0.01, 1e5] per minute,
/// `tokensConsumed` within [0, 1e6]. A value out of range is logged with what was sent.
pub fn bounded_balance(
    tokens_left: f64,
    refill_in_ms: f64,
    refill_rate_per_min: f64,
    tokens_consumed: f64,
) -> KeepaBalance {
    let max = crate::quota::KEEPA_MAX_TOKENS as f64;
    // `as` from f64 saturates (NaN is 0); the clamp below does the rest.
    let tokens = if tokens_left.is_nan() {
        0.0
    } else {
        tokens_left.clamp(-max, max)
    };
    let refill_in = if refill_in_ms.is_nan() {
        0.0
    } else {
        refill_in_ms.max(0.0)
    };
    let values =
        crate::quota::KeepaValues::bounded(tokens as i64, refill_in as u64, refill_rate_per_min);
    let consumed = if tokens_consumed.is_nan() {
        0.0
    } else {
        tokens_consumed.clamp(0.0, max)
    };
    let clamped = values.clamped
        || tokens != tokens_left
        || refill_in != refill_in_ms
        || values.refill_in_ms as f64 != refill_in.trunc();
    if clamped {
        tracing::warn!(
            tokens_left,
            refill_in_ms,
            refill_rate_per_min,
            "keepa balance out of range; clamped"
        );
    }
    KeepaBalance {
        tokens_left: values.tokens_left,
        refill_in_ms: values.refill_in_ms,
        refill_rate_per_min: values.refill_rate_per_min,
        tokens_consumed: consumed as i64,
    }
}

/// Keepa's "no value": -1 (and other negatives) in price and rank fields.
fn keepa_value(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64).filter(|value| *value >= 0)
}

/// Judges one product object of a `/product` answer.
pub fn judge_product(product: &Value, domain: i64) -> (String, KeepaProductOutcome) {
    let asin = product
        .get("asin")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let product_type = product.get("productType").and_then(Value::as_i64);
    let title = product
        .get("title")
        .and_then(Value::as_str)
        .map(str::to_string);
    let csv = product.get("csv").and_then(Value::as_array);
    if matches!(product_type, Some(3) | Some(4)) || (title.is_none() && csv.is_none()) {
        return (
            asin.clone(),
            KeepaProductOutcome::NotFound(format!("keepa has no product {asin}")),
        );
    }
    let Some(csv) = csv else {
        return (
            asin,
            KeepaProductOutcome::Incomplete("product without price history (csv)".to_string()),
        );
    };
    let history_points = csv
        .get(CSV_NEW)
        .and_then(Value::as_array)
        .map_or(0, |points| (points.len() / 2) as i64);
    let Some(stats) = product.get("stats").filter(|stats| stats.is_object()) else {
        return (
            asin,
            KeepaProductOutcome::Incomplete("product without stats".to_string()),
        );
    };
    let pick = |field: &str, index: usize| {
        keepa_value(
            stats
                .get(field)
                .and_then(Value::as_array)
                .and_then(|values| values.get(index)),
        )
    };
    let (Some(current), Some(avg365)) = (
        stats.get("current").and_then(Value::as_array),
        stats.get("avg365").and_then(Value::as_array),
    ) else {
        return (
            asin,
            KeepaProductOutcome::Incomplete(
                "stats without current or avg365 (the one-year average)".to_string(),
            ),
        );
    };
    if current.is_empty() || avg365.is_empty() {
        return (
            asin,
            KeepaProductOutcome::Incomplete("empty stats arrays".to_string()),
        );
    }
    let data = KeepaProductData {
        asin: asin.clone(),
        domain: product
            .get("domainId")
            .and_then(Value::as_i64)
            .unwrap_or(domain),
        title,
        current_amazon: pick("current", CSV_AMAZON),
        current_new: pick("current", CSV_NEW),
        sales_rank: pick("current", CSV_SALES),
        avg_90_new: pick("avg90", CSV_NEW),
        avg_365_new: pick("avg365", CSV_NEW),
        history_points,
        raw: product.to_string(),
    };
    (asin, KeepaProductOutcome::Complete(Box::new(data)))
}

impl KeepaClient {
    pub fn new(http: reqwest::Client, api_base: &str, api_key: &str, domain: &str) -> KeepaClient {
        KeepaClient {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            domain: domain.to_string(),
            stats_days: 365,
        }
    }

    /// Keepa's domain id as a number (1 when it is not one).
    pub fn domain_id(&self) -> i64 {
        self.domain.parse().unwrap_or(1)
    }

    /// Tokens one ASIN of [`KeepaClient::products`] costs (no offers, no buybox).
    pub fn tokens_per_asin(&self) -> f64 {
        1.0
    }

    async fn get(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> (Option<KeepaBalance>, Result<Envelope, ProviderError>) {
        let mut pairs: Vec<(&str, String)> = vec![("key", self.api_key.clone())];
        pairs.extend(query.iter().cloned());
        let sent = self
            .http
            .get(format!("{}{path}", self.api_base))
            .query(&pairs)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => return (None, Err(transport_error(operation, err))),
        };
        let status = response.status();
        let headers = response.headers().clone();
        // A product answer with full histories is large and its size is Keepa's to
        // choose (up to 100 products); an error answer is read only this far.
        let body = if status.is_success() {
            match super::read_capped(response, operation, MAX_KEEPA_BODY, KEEPA_TOO_BIG).await {
                Ok(body) => String::from_utf8_lossy(&body).into_owned(),
                Err(err) => return (None, Err(err)),
            }
        } else {
            read_error_body(response).await
        };
        let envelope: Option<Envelope> = serde_json::from_str(&body).ok();
        let balance = envelope.as_ref().and_then(Envelope::balance);
        let describe = || {
            envelope
                .as_ref()
                .and_then(|envelope| envelope.error.as_ref())
                .map(|error| error.to_string())
                .unwrap_or_else(|| clip(&body))
        };
        if status.is_success() {
            return match envelope {
                Some(envelope) => (balance, Ok(envelope)),
                None => (
                    balance,
                    Err(ProviderError::InvalidResponse {
                        operation,
                        message: format!("not a keepa json answer: {}", clip(&body)),
                    }),
                ),
            };
        }
        if status == StatusCode::BAD_REQUEST || status == StatusCode::PAYMENT_REQUIRED {
            // Keepa answers an unknown access key 400 REQUEST_REJECTED and an ended
            // subscription 402 PAYMENT_REQUIRED (the keepa Python client's SCODES); this
            // client's requests are otherwise well-formed (1 to 100 ASINs, a domain).
            let fix = if status == StatusCode::PAYMENT_REQUIRED {
                "the Keepa subscription of the account's key has ended; renew it or change api_key_env"
            } else {
                "check the account's api_key_env variable (Keepa rejects an unknown key with 400)"
            };
            return (
                balance,
                Err(ProviderError::Auth {
                    operation,
                    message: format!("http {}: {}; {fix}", status.as_u16(), describe()),
                }),
            );
        }
        let mut error = error_for_status(
            operation,
            status,
            &headers,
            describe(),
            "check the account's api_key_env variable and the Keepa plan",
        );
        if let ProviderError::QuotaExceeded { retry_after, .. } = &mut error {
            // No Retry-After: the balance says when it is positive again.
            *retry_after = retry_after.or_else(|| balance.map(|balance| balance.positive_in()));
        }
        (balance, Err(error))
    }

    /// The balance alone (`GET /token`, free).
    pub async fn token_status(&self) -> Result<KeepaBalance, ProviderError> {
        let (balance, result) = self.get(OP_TOKEN, "/token", &[]).await;
        result?;
        balance.ok_or_else(|| ProviderError::InvalidResponse {
            operation: OP_TOKEN,
            message: "answer without tokensLeft/refillRate".to_string(),
        })
    }

    /// `GET /product` for `asins` (at most [`MAX_ASINS`]) with history and a year of
    /// stats. Returns the balance the answer reported (also on a 429) and each requested
    /// ASIN's outcome; an ASIN missing from the answer is `Incomplete`.
    pub async fn products(
        &self,
        asins: &[String],
    ) -> (
        Option<KeepaBalance>,
        Result<HashMap<String, KeepaProductOutcome>, ProviderError>,
    ) {
        if asins.is_empty() || asins.len() > MAX_ASINS {
            return (
                None,
                Err(ProviderError::InvalidResponse {
                    operation: OP_PRODUCT,
                    message: format!("{} ASINs asked; keepa takes 1 to {MAX_ASINS}", asins.len()),
                }),
            );
        }
        let query = [
            ("domain", self.domain.clone()),
            ("asin", asins.join(",")),
            ("stats", self.stats_days.to_string()),
            ("history", "1".to_string()),
        ];
        let (balance, result) = self.get(OP_PRODUCT, "/product", &query).await;
        let envelope = match result {
            Ok(envelope) => envelope,
            Err(err) => return (balance, Err(err)),
        };
        let Some(products) = envelope.products else {
            return (
                balance,
                Err(ProviderError::InvalidResponse {
                    operation: OP_PRODUCT,
                    message: "answer without products".to_string(),
                }),
            );
        };
        let domain = self.domain_id();
        let mut outcomes: HashMap<String, KeepaProductOutcome> = products
            .iter()
            .map(|product| judge_product(product, domain))
            .filter(|(asin, _)| !asin.is_empty())
            .collect();
        for asin in asins {
            outcomes
                .entry(asin.to_ascii_uppercase())
                .or_insert_with(|| {
                    KeepaProductOutcome::Incomplete("missing from the answer".to_string())
                });
        }
        (balance, Ok(outcomes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn products_without_history_or_stats_are_not_data() {
        let complete = json!({"asin": "B1", "domainId": 1, "title": "T", "productType": 0,
            "csv": [[1, 1999], [1, 2099, 2, 2199], null, [1, 5000]],
            "stats": {"current": [1999, 2199, -1, 5000], "avg90": [1, 2100], "avg365": [1, 2050]}});
        let (asin, outcome) = judge_product(&complete, 1);
        assert_eq!(asin, "B1");
        let KeepaProductOutcome::Complete(data) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            (
                data.current_new,
                data.sales_rank,
                data.avg_365_new,
                data.history_points
            ),
            (Some(2199), Some(5000), Some(2050), 2)
        );
        let no_stats = json!({"asin": "B2", "title": "T", "productType": 0, "csv": [[1, 2]]});
        assert!(matches!(
            judge_product(&no_stats, 1).1,
            KeepaProductOutcome::Incomplete(_)
        ));
        let no_avg = json!({"asin": "B3", "title": "T", "productType": 0, "csv": [[1, 2]], "stats": {"current": [1]}});
        assert!(matches!(
            judge_product(&no_avg, 1).1,
            KeepaProductOutcome::Incomplete(_)
        ));
        let unknown = json!({"asin": "B4", "productType": 4, "csv": null});
        assert!(matches!(
            judge_product(&unknown, 1).1,
            KeepaProductOutcome::NotFound(_)
        ));
    }

    #[test]
    fn absurd_keepa_balances_are_bounded_before_use() {
        let balance = bounded_balance(-1e30, 1.8e19, 1e300, f64::NAN);
        assert_eq!(balance.tokens_left, -1_000_000);
        assert_eq!(balance.refill_in_ms, 3_600_000);
        assert_eq!(balance.refill_rate_per_min, 100_000.0);
        assert_eq!(balance.tokens_consumed, 0);
        assert!(balance.positive_in() <= crate::provider::MAX_RETRY_AFTER);
        let slow = bounded_balance(-1e6, 0.0, 0.0, 0.0);
        assert_eq!(
            slow.refill_rate_per_min,
            crate::quota::KEEPA_MIN_REFILL_RATE
        );
        assert_eq!(slow.positive_in(), crate::provider::MAX_RETRY_AFTER);
        let envelope: Envelope = serde_json::from_str(
            r#"{"tokensLeft":-9223372036854775808,"refillIn":18446744073709551615,"refillRate":-3}"#,
        )
        .expect("absurd numbers still parse");
        let balance = envelope.balance().expect("balance");
        assert_eq!(
            (balance.tokens_left, balance.refill_in_ms),
            (-1_000_000, 3_600_000)
        );
    }

    #[test]
    fn a_negative_balance_is_positive_again_after_its_refills() {
        let balance = KeepaBalance {
            tokens_left: -30,
            refill_in_ms: 5_000,
            refill_rate_per_min: 20.0,
            tokens_consumed: 50,
        };
        // -30 + 20 (5 s) = -10, + 20 (65 s) = 10.
        assert_eq!(balance.positive_in(), Duration::from_secs(65));
        let positive = KeepaBalance {
            tokens_left: 3,
            ..balance
        };
        assert_eq!(positive.positive_in(), Duration::ZERO);
    }
}
