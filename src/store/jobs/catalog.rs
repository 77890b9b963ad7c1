//! The catalog caches of the market-data providers that address prices by catalog id.
//!
//! - StockX (migration 0008): a style id's catalog product (or a remembered miss) and a
//!   product's variants by size, each with an expiry.
//! - Alias (migration 0014): a style id's catalog item and the US sizes it lists (or a
//!   remembered miss), with an expiry.
//!
//! The drainer reads a cache before spending a call and writes what the provider
//! answered; an id the provider says is gone is forgotten ([`forget_stockx_style`],
//! [`forget_alias_sku`]) and resolved again.
//!
//! Cache rows are facts about StockX and Alias, not ledger data: they are written without
//! the job fence (a late writer writes the same facts) and may be dropped at any time.
//! They live on the engine of the job queue ([`JobStore`]).

use super::{JobError, JobStore};
#[cfg(test)]
use crate::store::SqliteLedger;

/// The key a style id is cached under: trimmed, lower-case.
pub fn style_key(style: &str) -> String {
    style.trim().to_lowercase()
}

/// What the cache knows about a style id (only unexpired entries are answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedStyle {
    /// The style's catalog product.
    Product { product_id: String },
    /// StockX's search had no product with this style id, until `until`.
    Miss { until: i64 },
}

/// What the cache knows about a size of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedVariant {
    /// The product's variant list is not cached (or expired): ask StockX.
    Unknown,
    /// The cached list has no variant of this size; `sizes`: some it has.
    NoSuchSize {
        sizes: Vec<String>,
    },
    Variant {
        variant_id: String,
    },
}

/// A variant to cache: the keys its size may be named by and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantRow {
    pub size_keys: Vec<String>,
    pub variant_id: String,
}

/// The unexpired cache entry of `style` at `now`.
pub fn cached_stockx_style(
    store: &dyn JobStore,
    style: &str,
    now: i64,
) -> Result<Option<CachedStyle>, JobError> {
    let row = store.stockx_style_row(&style_key(style), now)?;
    Ok(row.map(|(product_id, until)| match product_id {
        Some(product_id) => CachedStyle::Product { product_id },
        None => CachedStyle::Miss { until },
    }))
}

/// The variant of `product_id` that `size_key` names, as far as the unexpired cache
/// knows at `now`.
pub fn cached_stockx_variant(
    store: &dyn JobStore,
    product_id: &str,
    size_key: &str,
    now: i64,
) -> Result<CachedVariant, JobError> {
    store.stockx_variant_lookup(product_id, size_key, now)
}

/// Remembers that `style` is catalog product `product_id` (`None`: a miss) until
/// `now + ttl_secs`.
pub fn put_stockx_style(
    store: &dyn JobStore,
    style: &str,
    product_id: Option<&str>,
    title: Option<&str>,
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    store.upsert_stockx_style(
        &style_key(style),
        style.trim(),
        product_id,
        title,
        now,
        now.saturating_add(ttl_secs.max(1)),
    )
}

/// Replaces the cached variant list of `product_id` with `variants` until
/// `now + ttl_secs`. A size key two variants share names the first.
pub fn put_stockx_variants(
    store: &dyn JobStore,
    product_id: &str,
    variants: &[VariantRow],
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    store.replace_stockx_variants(
        product_id,
        variants,
        now,
        now.saturating_add(ttl_secs.max(1)),
    )
}

/// The size keys of `variants` in the order they are inserted: every variant's own value
/// first, so a value never loses to another variant's size-chart entry of the same text
/// (a size key two variants share names the first inserted).
pub(crate) fn variant_keys(variants: &[VariantRow]) -> impl Iterator<Item = (&str, &str)> {
    let firsts = variants.iter().flat_map(|variant| {
        variant.size_keys[..variant.size_keys.len().min(1)]
            .iter()
            .map(move |key| (key.as_str(), variant.variant_id.as_str()))
    });
    let rest = variants.iter().flat_map(|variant| {
        variant.size_keys[variant.size_keys.len().min(1)..]
            .iter()
            .map(move |key| (key.as_str(), variant.variant_id.as_str()))
    });
    firsts.chain(rest)
}

/// Forgets what the cache holds for `style`: its product (and that product's variants).
/// Called when StockX says a cached id is gone; the next lookup resolves again.
pub fn forget_stockx_style(store: &dyn JobStore, style: &str) -> Result<(), JobError> {
    store.delete_stockx_style(&style_key(style))
}

/// Counts of the cache: (styles resolved to a product, remembered misses, products with a
/// variant list), unexpired at `now`.
pub fn stockx_cache_counts(store: &dyn JobStore, now: i64) -> Result<(i64, i64, i64), JobError> {
    store.stockx_cache_totals(now)
}

/// The most sizes cached per Alias item (an item lists a few dozen at most).
pub const MAX_ALIAS_SIZES: usize = 200;

/// The key an Alias style id is cached under: its letters and digits, upper-cased, so
/// `DD1391-100`, `dd1391 100` and `DD1391100` are one entry (Alias writes `DD1391 100`).
pub fn alias_sku_key(sku: &str) -> String {
    sku.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// What the Alias cache knows about a style id (only unexpired entries are answered).
#[derive(Debug, Clone, PartialEq)]
pub enum CachedAliasItem {
    /// The style's catalog item and the US sizes it lists (empty: none listed, every size
    /// is asked).
    Item { catalog_id: String, sizes: Vec<f64> },
    /// Alias's catalog search had no item with this style id, until `until`.
    Miss { until: i64 },
}

/// The unexpired Alias cache entry of `sku` at `now`. Sizes that do not read back as
/// positive numbers are dropped (the column is ours, but a file can be edited).
pub fn cached_alias_item(
    store: &dyn JobStore,
    sku: &str,
    now: i64,
) -> Result<Option<CachedAliasItem>, JobError> {
    let row = store.alias_catalog_row(&alias_sku_key(sku), now)?;
    Ok(row.map(|(catalog_id, sizes, until)| match catalog_id {
        Some(catalog_id) => CachedAliasItem::Item {
            catalog_id,
            sizes: sizes
                .split(',')
                .take(MAX_ALIAS_SIZES)
                .filter_map(|size| size.trim().parse::<f64>().ok())
                .filter(|size| size.is_finite() && *size > 0.0)
                .collect(),
        },
        None => CachedAliasItem::Miss { until },
    }))
}

/// Remembers that `sku` is Alias catalog item `catalog_id` listing `sizes` (`None`: a
/// miss) until `now + ttl_secs`. At most [`MAX_ALIAS_SIZES`] sizes are kept.
pub fn put_alias_item(
    store: &dyn JobStore,
    sku: &str,
    catalog_id: Option<&str>,
    sizes: &[f64],
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    let sizes_text = sizes
        .iter()
        .take(MAX_ALIAS_SIZES)
        .filter(|size| size.is_finite() && **size > 0.0)
        .map(|size| format!("{size}"))
        .collect::<Vec<_>>()
        .join(",");
    store.upsert_alias_item(
        &alias_sku_key(sku),
        sku.trim(),
        catalog_id,
        &sizes_text,
        now,
        now.saturating_add(ttl_secs.max(1)),
    )
}

/// Forgets the Alias cache entry of `sku`: called when Alias says its catalog id is gone;
/// the next lookup searches again.
pub fn forget_alias_sku(store: &dyn JobStore, sku: &str) -> Result<(), JobError> {
    store.delete_alias_item(&alias_sku_key(sku))
}

/// Counts of the Alias cache: (style ids resolved to an item, remembered misses),
/// unexpired at `now`.
pub fn alias_cache_counts(store: &dyn JobStore, now: i64) -> Result<(i64, i64), JobError> {
    store.alias_cache_totals(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_variants_misses_and_forgetting() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        assert_eq!(
            cached_stockx_style(&ledger, "DD1391-100", 100).unwrap(),
            None
        );
        put_stockx_style(&ledger, "DD1391-100", Some("p-1"), Some("Dunk"), 100, 50).unwrap();
        put_stockx_style(&ledger, "NOPE-1", None, None, 100, 10).unwrap();
        assert_eq!(
            cached_stockx_style(&ledger, " dd1391-100 ", 120).unwrap(),
            Some(CachedStyle::Product {
                product_id: "p-1".to_string()
            })
        );
        assert_eq!(
            cached_stockx_style(&ledger, "NOPE-1", 105).unwrap(),
            Some(CachedStyle::Miss { until: 110 })
        );
        // Expired entries are not answered.
        assert_eq!(cached_stockx_style(&ledger, "NOPE-1", 110).unwrap(), None);
        assert_eq!(
            cached_stockx_variant(&ledger, "p-1", "10", 120).unwrap(),
            CachedVariant::Unknown
        );
        let rows = vec![
            VariantRow {
                size_keys: vec!["10".into(), "us m 10".into(), "uk 9".into()],
                variant_id: "v-10".into(),
            },
            VariantRow {
                size_keys: vec!["9".into(), "us m 9".into(), "uk 8".into()],
                variant_id: "v-9".into(),
            },
        ];
        put_stockx_variants(&ledger, "p-1", &rows, 100, 50).unwrap();
        assert_eq!(
            cached_stockx_variant(&ledger, "p-1", "uk 9", 120).unwrap(),
            CachedVariant::Variant {
                variant_id: "v-10".into()
            }
        );
        assert_eq!(
            cached_stockx_variant(&ledger, "p-1", "99", 120).unwrap(),
            CachedVariant::NoSuchSize {
                sizes: vec!["10".into(), "9".into()]
            }
        );
        assert_eq!(stockx_cache_counts(&ledger, 105).unwrap(), (1, 1, 1));
        forget_stockx_style(&ledger, "DD1391-100").unwrap();
        assert_eq!(
            cached_stockx_style(&ledger, "DD1391-100", 120).unwrap(),
            None
        );
        assert_eq!(
            cached_stockx_variant(&ledger, "p-1", "10", 120).unwrap(),
            CachedVariant::Unknown
        );
    }

    #[test]
    fn alias_items_misses_expiry_and_forgetting() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        assert_eq!(cached_alias_item(&ledger, "DD1391-100", 100).unwrap(), None);
        put_alias_item(
            &ledger,
            "DD1391-100",
            Some("dunk-low"),
            &[9.0, 10.5, f64::NAN, -1.0],
            100,
            50,
        )
        .unwrap();
        put_alias_item(&ledger, "UNKNOWN-1", None, &[], 100, 10).unwrap();
        // One entry whatever the separators and case.
        assert_eq!(
            cached_alias_item(&ledger, "dd1391 100", 120).unwrap(),
            Some(CachedAliasItem::Item {
                catalog_id: "dunk-low".to_string(),
                sizes: vec![9.0, 10.5]
            })
        );
        assert_eq!(
            cached_alias_item(&ledger, "UNKNOWN-1", 105).unwrap(),
            Some(CachedAliasItem::Miss { until: 110 })
        );
        assert_eq!(alias_cache_counts(&ledger, 105).unwrap(), (1, 1));
        // Expired entries are not answered.
        assert_eq!(cached_alias_item(&ledger, "UNKNOWN-1", 110).unwrap(), None);
        assert_eq!(cached_alias_item(&ledger, "DD1391-100", 150).unwrap(), None);
        // A new answer replaces the entry; forgetting drops it.
        put_alias_item(&ledger, "DD1391100", Some("dunk-low-2"), &[], 150, 50).unwrap();
        assert_eq!(
            cached_alias_item(&ledger, "DD1391-100", 160).unwrap(),
            Some(CachedAliasItem::Item {
                catalog_id: "dunk-low-2".to_string(),
                sizes: vec![]
            })
        );
        forget_alias_sku(&ledger, "dd1391-100").unwrap();
        assert_eq!(cached_alias_item(&ledger, "DD1391-100", 160).unwrap(), None);
    }
}
