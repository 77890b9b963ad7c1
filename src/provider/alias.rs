//! The Alias (GOAT's seller platform) pricing client: a style id's catalog id (searched
//! once, then cached), then the market of one variant (catalog id, US size, new in a good
//! box). The wire format lives in [`super::alias_wire`].
//!
//! A lookup costs two calls when the catalog id is not cached (SearchCatalog, then
//! GetPricingInsights) and one when it is: [`AliasClient::calls_needed`] tells the drainer
//! what to ask the TokenManager for before it calls. Catalog ids "will not change over
//! time" (Alias's reference), so the cache has no TTL; it holds at most
//! [`CATALOG_CACHE_MAX`] style ids (emptied when full) and forgets an id the pricing
//! call answers 404 for.
//!
//! Errors are [`ProviderError`]s: 429 `QuotaExceeded`, 401/403 `Auth` (a personal access
//! token cannot be refreshed: the operator replaces it), no catalog item for the style id
//! or a size the item does not list is `NotFound`, other statuses `Http`, a body that is
//! not the expected JSON (or holds an out-of-range amount) `InvalidResponse`. The token
//! never appears in errors or logs.

use std::collections::HashMap;
use std::sync::Mutex;

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
const OP_CATALOG: &str = "aliasCatalog";
/// Style ids whose catalog id is kept.
pub const CATALOG_CACHE_MAX: usize = 10_000;

/// The market of one Alias variant in US dollars; `None` where Alias has no price.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasMarket {
    pub lowest_ask: Option<f64>,
    pub highest_bid: Option<f64>,
    pub last_sale: Option<f64>,
    pub global_indicator: Option<f64>,
    pub currency: String,
}

/// A cached catalog item: its id and the US sizes it is priced in.
#[derive(Debug, Clone)]
struct CatalogEntry {
    catalog_id: String,
    sizes: Vec<f64>,
}

/// An Alias client for one personal access token.
pub struct AliasClient {
    http: reqwest::Client,
    api_base: String,
    /// The personal access token (PAT).
    token: String,
    /// `region_id`, or `None` for every region.
    region: Option<String>,
    /// Style id key ([`wire::sku_key`]) → catalog item. Why a std Mutex: held for a map
    /// lookup or insert only, never across an await.
    catalog: Mutex<HashMap<String, CatalogEntry>>,
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
            catalog: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CatalogEntry>> {
        self.catalog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Calls a lookup of `sku` will make: 1 with its catalog id cached, else 2.
    pub fn calls_needed(&self, sku: &str) -> u32 {
        if self.cache().contains_key(&wire::sku_key(sku)) {
            1
        } else {
            2
        }
    }

    /// The market of `sku` in US size `size`, and the calls it took.
    pub async fn market(&self, sku: &str, size: &str) -> (u32, Result<AliasMarket, ProviderError>) {
        let mut calls = 0;
        let result = self.market_counted(sku, size, &mut calls).await;
        (calls, result)
    }

    async fn market_counted(
        &self,
        sku: &str,
        size: &str,
        calls: &mut u32,
    ) -> Result<AliasMarket, ProviderError> {
        let wanted = size
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite() && *value > 0.0 && *value <= wire::MAX_SIZE)
            .ok_or_else(|| ProviderError::NotFound {
                operation: OP_PRICING,
                message: format!("size {size:?} is not a US size number"),
            })?;
        let key = wire::sku_key(sku);
        let cached = self.cache().get(&key).cloned();
        let entry = match cached {
            Some(entry) => entry,
            None => {
                *calls += 1;
                let entry = self.search(sku, &key).await?;
                let mut cache = self.cache();
                if cache.len() >= CATALOG_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key.clone(), entry.clone());
                entry
            }
        };
        if !entry.sizes.is_empty() && !entry.sizes.contains(&wanted) {
            return Err(ProviderError::NotFound {
                operation: OP_PRICING,
                message: format!(
                    "alias item {} ({sku}) is not sold in US size {size}",
                    entry.catalog_id
                ),
            });
        }
        *calls += 1;
        let size_param = wire::size_param(wanted);
        let mut query = vec![
            ("catalog_id", entry.catalog_id.as_str()),
            ("size", size_param.as_str()),
            ("product_condition", wire::PRODUCT_CONDITION),
            ("packaging_condition", wire::PACKAGING_CONDITION),
        ];
        if let Some(region) = &self.region {
            query.push(("region_id", region.as_str()));
        }
        let body = match self.get(OP_PRICING, wire::AVAILABILITY_PATH, &query).await {
            Err(ProviderError::NotFound { .. }) => {
                // The id is gone: search again next time.
                self.cache().remove(&key);
                return Err(ProviderError::NotFound {
                    operation: OP_PRICING,
                    message: format!(
                        "alias has no pricing for {} ({sku}) in size {size}; its catalog id is searched again next time",
                        entry.catalog_id
                    ),
                });
            }
            other => other?,
        };
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

    /// The catalog item whose style id is `sku` (compared as `key`).
    async fn search(&self, sku: &str, key: &str) -> Result<CatalogEntry, ProviderError> {
        let body = self
            .get(
                OP_CATALOG,
                wire::CATALOG_PATH,
                &[("query", sku), ("limit", wire::CATALOG_LIMIT)],
            )
            .await?;
        let page: CatalogPage = serde_json::from_slice(&body)
            .map_err(|err| invalid(OP_CATALOG, &format!("catalog search: {err}")))?;
        let item = page
            .catalog_items
            .iter()
            .take(wire::MAX_CATALOG_ITEMS)
            .find(|item| item.sku.as_deref().map(wire::sku_key).as_deref() == Some(key))
            .ok_or_else(|| ProviderError::NotFound {
                operation: OP_PRICING,
                message: format!("no alias catalog item has the style id {sku:?}"),
            })?;
        if item.catalog_id.is_empty() || item.catalog_id.len() > 256 {
            return Err(invalid(
                OP_CATALOG,
                "catalog item with an empty or oversized catalog_id",
            ));
        }
        debug!(sku, catalog_id = %item.catalog_id, "alias catalog id found");
        Ok(CatalogEntry {
            catalog_id: item.catalog_id.clone(),
            sizes: wire::us_sizes(item),
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
