//! `offers`: a snapshot of the seller's Sell Inventory offers each run. eBay's
//! getOffers takes one SKU (`sku` is required), so a run lists the seller's SKUs with
//! getInventoryItems (`offset` is a **page number** there, `limit` at most 100), then asks
//! getOffers for each SKU, and applies every offer in one transaction under the stream's
//! cursor (the cursor is the time of the last applied snapshot). Changes of an offer's
//! status, listing status, price or available quantity go to the history. Wire formats:
//! `docs/ebay-wire.md`.
//!
//! Bounds: at most [`MAX_SKUS`] SKUs and [`MAX_ITEM_PAGES`] pages; every body is capped
//! at `max_response_bytes`; a `total` that changes while the SKUs are paged fails the run
//! (it is retried with the stream's backoff), so a snapshot is never applied half read.
//! What this does not see: an offer whose SKU left the inventory is not marked gone.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use tracing::info;

use super::adapter::Resource;
use super::ebay::{typed, Money};
use super::CursorRunner;
use crate::provider::ebay::EbayApi;
use crate::provider::ProviderError;
use crate::quota::Priority;
use crate::shapes::{CallError, RunOutcome, StreamContext, SyncError, QUOTA_WAIT_MAX};
use crate::store::ebay_streams::OFFERS_TABLE;
use crate::store::WriteFence;

/// The stream's name in the configuration.
pub const STREAM: &str = "offers";
/// getInventoryItems' largest page (its `limit`: 1 to 100).
pub const ITEMS_PAGE_LIMIT: u64 = 100;
/// The most SKUs one snapshot reads (a larger `total` fails the run).
pub const MAX_SKUS: u64 = 100_000;
/// The most getInventoryItems pages one snapshot reads.
pub const MAX_ITEM_PAGES: u64 = MAX_SKUS / ITEMS_PAGE_LIMIT;
/// getOffers returns at most 25 offers for a SKU ("Max Occurs: 25").
const MAX_OFFERS_PER_SKU: u64 = 25;

/// Why a snapshot stopped before it was applied.
enum Stop {
    Call(CallError),
    /// The answers do not make a consistent snapshot (a `total` that moved, too many).
    Invalid(String),
    Cancelled,
}

impl From<CallError> for Stop {
    fn from(err: CallError) -> Stop {
        Stop::Call(err)
    }
}

/// One paced, capped GET of the Inventory API.
async fn call(
    runner: &CursorRunner,
    context: &StreamContext,
    operation: &'static str,
    path: &str,
    query: &[(String, String)],
) -> Result<Vec<u8>, CallError> {
    context
        .paced(operation, 1.0, Priority::Background, QUOTA_WAIT_MAX, true)
        .await?;
    let result = runner
        .client
        .get_capped(
            operation,
            EbayApi::Inventory,
            path,
            query,
            context.stream.cursor().max_response_bytes,
        )
        .await;
    context.observe(operation, &result);
    result.map_err(CallError::Provider)
}

/// The SKUs of the seller (getInventoryItems, page by page).
async fn skus(runner: &CursorRunner, context: &StreamContext) -> Result<Vec<String>, Stop> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ItemsPage {
        total: Option<u64>,
        #[serde(default)]
        inventory_items: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        sku: String,
    }
    let operation = "getInventoryItems";
    let mut skus: Vec<String> = Vec::new();
    let mut first_total: Option<u64> = None;
    for page in 0..MAX_ITEM_PAGES {
        if context.cancel.is_cancelled() || context.abort.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let query = vec![
            ("limit".to_string(), ITEMS_PAGE_LIMIT.to_string()),
            // The page number, not an item count (getInventoryItems' `offset`).
            ("offset".to_string(), page.to_string()),
        ];
        let body = call(
            runner,
            context,
            operation,
            "/sell/inventory/v1/inventory_item",
            &query,
        )
        .await?;
        let parsed: ItemsPage = serde_json::from_slice(&body).map_err(|err| {
            Stop::Call(CallError::Provider(ProviderError::InvalidResponse {
                operation,
                message: format!("getInventoryItems page is not the expected json: {err}"),
            }))
        })?;
        let total = parsed.total.unwrap_or(0);
        if total > MAX_SKUS {
            return Err(Stop::Invalid(format!(
                "the seller has {total} inventory items, over the limit of {MAX_SKUS} a snapshot reads"
            )));
        }
        if *first_total.get_or_insert(total) != total {
            return Err(Stop::Invalid(format!(
                "the inventory changed while paged (total {} then {total})",
                first_total.unwrap_or(0)
            )));
        }
        context.bump();
        let received = parsed.inventory_items.len();
        skus.extend(
            parsed
                .inventory_items
                .into_iter()
                .map(|item| item.sku)
                .filter(|sku| !sku.is_empty() && sku.len() <= 50),
        );
        let read = page.saturating_add(1).saturating_mul(ITEMS_PAGE_LIMIT);
        if received == 0 || read >= total {
            break;
        }
    }
    let mut seen = HashSet::with_capacity(skus.len());
    skus.retain(|sku| seen.insert(sku.clone()));
    if first_total.is_some_and(|total| total != skus.len() as u64) {
        return Err(Stop::Invalid(format!(
            "getInventoryItems promised {} items and served {} distinct SKUs",
            first_total.unwrap_or(0),
            skus.len()
        )));
    }
    Ok(skus)
}

/// The offers of one SKU (getOffers); a 404 is a SKU without an offer.
async fn offers_of(
    runner: &CursorRunner,
    context: &StreamContext,
    sku: &str,
) -> Result<Vec<Resource>, Stop> {
    #[derive(Deserialize)]
    struct OffersPage {
        total: Option<u64>,
        #[serde(default)]
        offers: Vec<Value>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Offer {
        offer_id: String,
        sku: String,
        status: Option<String>,
        available_quantity: Option<u64>,
        pricing_summary: Option<Pricing>,
        listing: Option<Listing>,
    }
    #[derive(Deserialize)]
    struct Pricing {
        price: Option<Money>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Listing {
        listing_id: Option<String>,
        listing_status: Option<String>,
    }
    let operation = "getOffers";
    let query = vec![("sku".to_string(), sku.to_string())];
    let body = match call(
        runner,
        context,
        operation,
        "/sell/inventory/v1/offer",
        &query,
    )
    .await
    {
        Ok(body) => body,
        Err(CallError::Provider(ProviderError::Http { status: 404, .. })) => return Ok(Vec::new()),
        Err(err) => return Err(Stop::Call(err)),
    };
    let invalid = |message: String| {
        Stop::Call(CallError::Provider(ProviderError::InvalidResponse {
            operation,
            message,
        }))
    };
    let page: OffersPage = serde_json::from_slice(&body)
        .map_err(|err| invalid(format!("getOffers answer is not the expected json: {err}")))?;
    let total = page.total.unwrap_or(page.offers.len() as u64);
    if total > MAX_OFFERS_PER_SKU || total != page.offers.len() as u64 {
        return Err(invalid(format!(
            "getOffers for one SKU says {total} offers and lists {}",
            page.offers.len()
        )));
    }
    let items = typed(page.offers, "offers", |offer: Offer| {
        let price = offer.pricing_summary.and_then(|pricing| pricing.price);
        let (value, currency) = match price {
            Some(money) => (money.value, money.currency),
            None => (None, None),
        };
        let (listing_id, listing_status) = match offer.listing {
            Some(listing) => (listing.listing_id, listing.listing_status),
            None => (None, None),
        };
        (
            offer.offer_id,
            vec![
                Some(offer.sku),
                offer.status,
                listing_id,
                listing_status,
                value,
                currency,
                offer
                    .available_quantity
                    .map(|quantity| quantity.to_string()),
            ],
        )
    })
    .map_err(invalid)?;
    if let Some(other) = items
        .iter()
        .find(|item| item.values.first().and_then(|v| v.as_deref()) != Some(sku))
    {
        return Err(invalid(format!(
            "getOffers for SKU {sku:?} served offer {} of another SKU",
            other.id
        )));
    }
    Ok(items)
}

/// One snapshot of the account's offers (see the module doc).
pub(super) async fn run_snapshot(
    runner: &CursorRunner,
    context: &StreamContext,
    fence: WriteFence,
) -> Result<RunOutcome, SyncError> {
    let account = context.account.id.clone();
    let (cursor, now) = match runner.snapshot_start(context, STREAM).await? {
        Ok(started) => started,
        Err(stop) => return Ok(stop),
    };
    let window = super::CursorWindow {
        start: cursor.cursor_ts,
        end: now.max(cursor.cursor_ts.saturating_add(1)),
    };
    let read = async {
        let skus = skus(runner, context).await?;
        let mut resources: Vec<Resource> = Vec::with_capacity(skus.len());
        for sku in &skus {
            if context.cancel.is_cancelled() || context.abort.is_cancelled() {
                return Err(Stop::Cancelled);
            }
            resources.extend(offers_of(runner, context, sku).await?);
            context.bump();
        }
        Ok((skus.len(), resources))
    };
    let (sku_count, resources) = match read.await {
        Ok(read) => read,
        Err(Stop::Cancelled) => return Ok(RunOutcome::Cancelled),
        Err(Stop::Call(CallError::Provider(err))) if err.stops_account() => {
            return runner.stop_account(context, &err).await;
        }
        Err(Stop::Call(CallError::Provider(err))) => {
            return runner
                .fail_window(context, fence, window, cursor.failures, &err.to_string())
                .await;
        }
        Err(Stop::Call(refused)) => return runner.refused(context, refused).await,
        Err(Stop::Invalid(message)) => {
            return runner
                .fail_window(context, fence, window, cursor.failures, &message)
                .await;
        }
    };
    let count = resources.len();
    let account_db = account.clone();
    let applied = runner
        .on_cursors(move |store| {
            store.apply_window(
                &account_db,
                STREAM,
                fence,
                &OFFERS_TABLE,
                &resources,
                window,
                crate::domain::now_ts(),
            )
        })
        .await?;
    info!(
        skus = sku_count,
        offers = count,
        inserted = applied.inserted,
        updated = applied.updated,
        unchanged = applied.unchanged,
        events = applied.events,
        "offers snapshot applied"
    );
    Ok(RunOutcome::Finished {
        applied: 1,
        failed: 0,
    })
}
