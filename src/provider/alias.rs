//! The Alias (GOAT's seller platform) pricing client: a style id's catalog item
//! ([`AliasClient::search`], SearchCatalog), then the market of one variant
//! ([`AliasClient::pricing`], GetPricingInsights: catalog id, US size, new in a good
//! box). The wire format lives in [`super::alias_wire`].
//!
//! The client keeps no state: the drainer (`shapes::jobs::worker`) caches catalog ids
//! in the store (`store::jobs::catalog`, migration 0014) with a TTL and a miss cache, asks
//! the TokenManager for one token per call, and forgets an id the pricing call answers
//! 404 for.
//!
//! Errors are [`ProviderError`]s: 429 `QuotaExceeded`, 401/403 `Auth` (a personal access
//! token cannot be refreshed: the operator replaces it), no catalog item for the style id
//! or a size the item does not list is `NotFound`, other statuses `Http`, a body that is
//! not the expected JSON (or holds an out-of-range amount) `InvalidResponse`. The token
//! never appears in errors or logs.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use tracing::debug;

use super::alias_wire::{self as wire, AvailabilityAnswer, CatalogPage};
use super::{
    clip, error_for_status, invalid, read_capped, read_error_body, transport_error, ProviderError,
    MAX_JSON_BODY,
};

/// The operation name for quota buckets, metrics and fault schedules (both calls pay
/// the provider's one hourly budget).
pub const OP_PRICING: &str = "pricingInsights";
/// The catalog search's name in metrics and errors (its grants come from the
/// [`OP_PRICING`] bucket).
pub const OP_CATALOG: &str = "aliasCatalog";

/// The market of one Alias variant in US dollars; `None` where Alias has no price.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasMarket {
    pub lowest_ask: Option<f64>,
    pub highest_bid: Option<f64>,
    pub last_sale: Option<f64>,
    pub global_indicator: Option<f64>,
    pub currency: String,
}

/// A catalog item: its id and the US sizes it is priced in (empty: none listed).
#[derive(Debug, Clone, PartialEq)]
pub struct AliasItem {
    pub catalog_id: String,
    pub sizes: Vec<f64>,
}

/// An Alias client for one personal access token.
pub struct AliasClient {
    http: reqwest::Client,
    api_base: String,
    /// The personal access token (PAT).
    token: String,
    /// `region_id`, or `None` for every region.
    region: Option<String>,
}

impl std::fmt::Debug for AliasClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasClient")
            .field("api_base", &self.api_base)
            .field("token", &"<redacted>")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl AliasClient {
    /// `marketplace`: `global` (no `region_id`) or an Alias region id.
    pub fn new(http: reqwest::Client, api_base: &str, token: &str, marketplace: &str) -> Self {
        AliasClient {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            region: (marketplace != wire::GLOBAL_REGION && !marketplace.is_empty())
                .then(|| marketplace.to_string()),
        }
    }

    /// The catalog item whose style id is `sku` (compared without case, spaces or
    /// hyphens); `Ok(None)` when the search lists none.
    pub async fn search(&self, sku: &str) -> Result<Option<AliasItem>, ProviderError> {
        let key = wire::sku_key(sku);
        let body = self
            .get(
                OP_CATALOG,
                wire::CATALOG_PATH,
                &[("query", sku), ("limit", wire::CATALOG_LIMIT)],
            )
            .await?;
        let page: CatalogPage = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_CATALOG, &format!("catalog search: {err}")))?;
        let Some(item) = page
            .catalog_items
            .iter()
            .take(wire::MAX_CATALOG_ITEMS)
            .find(|item| item.sku.as_deref().map(wire::sku_key) == Some(key.clone()))
        else {
            return Ok(None);
        };
        if item.catalog_id.is_empty() || item.catalog_id.len() > wire::MAX_CATALOG_ID {
            return Err(invalid(
                OP_CATALOG,
                "catalog item with an empty or oversized catalog_id",
            ));
        }
        debug!(sku, catalog_id = %item.catalog_id, "alias catalog id found");
        Ok(Some(AliasItem {
            catalog_id: item.catalog_id.clone(),
            sizes: wire::us_sizes(item),
        }))
    }

    /// The market of catalog item `catalog_id` in US size `size` (new, good box). A 404
    /// (the id is gone, or was never Alias's) is `NotFound`.
    pub async fn pricing(&self, catalog_id: &str, size: f64) -> Result<AliasMarket, ProviderError> {
        let size_param = wire::size_param(size);
        let mut query = vec![
            ("catalog_id", catalog_id),
            ("size", size_param.as_str()),
            ("product_condition", wire::PRODUCT_CONDITION),
            ("packaging_condition", wire::PACKAGING_CONDITION),
        ];
        if let Some(region) = &self.region {
            query.push(("region_id", region.as_str()));
        }
        let body = self
            .get(OP_PRICING, wire::AVAILABILITY_PATH, &query)
            .await?;
        let answer: AvailabilityAnswer = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_PRICING, &format!("pricing insights: {err}")))?;
        let availability = &answer.availability;
        let amount = |value, field| {
            wire::dollars(value, field).map_err(|message| invalid(OP_PRICING, &message))
        };
        Ok(AliasMarket {
            lowest_ask: amount(
                &availability.lowest_listing_price_cents,
                "lowest_listing_price_cents",
            )?,
            highest_bid: amount(
                &availability.highest_offer_price_cents,
                "highest_offer_price_cents",
            )?,
            last_sale: amount(
                &availability.last_sold_listing_price_cents,
                "last_sold_listing_price_cents",
            )?,
            global_indicator: amount(
                &availability.global_indicator_price_cents,
                "global_indicator_price_cents",
            )?,
            currency: wire::CURRENCY.to_string(),
        })
    }

    /// GETs `path` with `query`; the capped success body or the mapped error.
    async fn get(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<u8>, ProviderError> {
        let response = self
            .http
            .get(format!("{}{path}", self.api_base))
            .query(query)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|err| transport_error(operation, err))?;
        let status = response.status();
        if status.is_success() {
            return read_capped(response, operation, MAX_JSON_BODY, "").await;
        }
        let headers = response.headers().clone();
        let body = read_error_body(response).await;
        let message = clip(&wire::error_message(&body));
        if status == StatusCode::NOT_FOUND {
            return Err(ProviderError::NotFound { operation, message });
        }
        Err(error_for_status(
            operation,
            status,
            &headers,
            message,
            "check the personal access token in the account's api_key_env",
        ))
    }
}
