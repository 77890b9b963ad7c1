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
//! Cache rows are facts about StockX, not ledger data: they are written without the job
//! fence (a late writer writes the same facts) and may be dropped at any time.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::JobError;
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
    ledger: &SqliteLedger,
    style: &str,
    now: i64,
) -> Result<Option<CachedStyle>, JobError> {
    let key = style_key(style);
    ledger.with_read_conn(|conn| {
        let row: Option<(Option<String>, i64)> = conn
            .prepare_cached(
                "SELECT product_id, expires_at FROM stockx_styles WHERE style_key = ?1 AND expires_at > ?2",
            )?
            .query_row(params![key, now], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(row.map(|(product_id, until)| match product_id {
            Some(product_id) => CachedStyle::Product { product_id },
            None => CachedStyle::Miss { until },
        }))
    })
}

/// The variant of `product_id` that `size_key` names, as far as the unexpired cache
/// knows at `now`.
pub fn cached_stockx_variant(
    ledger: &SqliteLedger,
    product_id: &str,
    size_key: &str,
    now: i64,
) -> Result<CachedVariant, JobError> {
    ledger.with_read_conn(|conn| {
        let listed: Option<i64> = conn
            .prepare_cached(
                "SELECT variants FROM stockx_products WHERE product_id = ?1 AND expires_at > ?2",
            )?
            .query_row(params![product_id, now], |row| row.get(0))
            .optional()?;
        if listed.is_none() {
            return Ok(CachedVariant::Unknown);
        }
        let variant: Option<String> = conn
            .prepare_cached(
                "SELECT variant_id FROM stockx_variants WHERE product_id = ?1 AND size_key = ?2",
            )?
            .query_row(params![product_id, size_key], |row| row.get(0))
            .optional()?;
        if let Some(variant_id) = variant {
            return Ok(CachedVariant::Variant { variant_id });
        }
        let sizes: Vec<String> = conn
            .prepare_cached(
                "SELECT size_key FROM stockx_variants WHERE product_id = ?1 AND size_key NOT LIKE '% %'
                 ORDER BY size_key LIMIT 40",
            )?
            .query_map(params![product_id], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(CachedVariant::NoSuchSize { sizes })
    })
}

/// Remembers that `style` is catalog product `product_id` (`None`: a miss) until
/// `now + ttl_secs`.
pub fn put_stockx_style(
    ledger: &SqliteLedger,
    style: &str,
    product_id: Option<&str>,
    title: Option<&str>,
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    let key = style_key(style);
    ledger.with_conn(|conn| {
        conn.prepare_cached(
            "INSERT INTO stockx_styles (style_key, style_id, product_id, title, resolved_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (style_key) DO UPDATE SET style_id = excluded.style_id,
                 product_id = excluded.product_id, title = excluded.title,
                 resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
        )?
        .execute(params![
            key,
            style.trim(),
            product_id,
            title,
            now,
            now.saturating_add(ttl_secs.max(1))
        ])?;
        Ok(())
    })
}

/// Replaces the cached variant list of `product_id` with `variants` until
/// `now + ttl_secs`. A size key two variants share names the first.
pub fn put_stockx_variants(
    ledger: &SqliteLedger,
    product_id: &str,
    variants: &[VariantRow],
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM stockx_products WHERE product_id = ?1")?
            .execute(params![product_id])?;
        tx.prepare_cached(
            "INSERT INTO stockx_products (product_id, resolved_at, expires_at, variants) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            product_id,
            now,
            now.saturating_add(ttl_secs.max(1)),
            variants.len() as i64
        ])?;
        // Every variant's own value first, so a value never loses to another variant's
        // size-chart entry of the same text.
        for pass in 0..2 {
            for variant in variants {
                let keys = if pass == 0 {
                    &variant.size_keys[..variant.size_keys.len().min(1)]
                } else {
                    &variant.size_keys[variant.size_keys.len().min(1)..]
                };
                for key in keys {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO stockx_variants (product_id, size_key, variant_id) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![product_id, key, variant.variant_id])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    })
}

/// Forgets what the cache holds for `style`: its product (and that product's variants).
/// Called when StockX says a cached id is gone; the next lookup resolves again.
pub fn forget_stockx_style(ledger: &SqliteLedger, style: &str) -> Result<(), JobError> {
    let key = style_key(style);
    ledger.with_conn(|conn| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached(
            "DELETE FROM stockx_products WHERE product_id IN
                 (SELECT product_id FROM stockx_styles WHERE style_key = ?1 AND product_id IS NOT NULL)",
        )?
        .execute(params![key])?;
        tx.prepare_cached("DELETE FROM stockx_styles WHERE style_key = ?1")?
            .execute(params![key])?;
        tx.commit()?;
        Ok(())
    })
}

/// Counts of the cache: (styles resolved to a product, remembered misses, products with a
/// variant list), unexpired at `now`.
pub fn stockx_cache_counts(ledger: &SqliteLedger, now: i64) -> Result<(i64, i64, i64), JobError> {
    ledger.with_read_conn(|conn| {
        let (hits, misses): (i64, i64) = conn
            .prepare_cached(
                "SELECT COALESCE(SUM(product_id IS NOT NULL), 0), COALESCE(SUM(product_id IS NULL), 0)
                 FROM stockx_styles WHERE expires_at > ?1",
            )?
            .query_row(params![now], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let products: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM stockx_products WHERE expires_at > ?1")?
            .query_row(params![now], |row| row.get(0))?;
        Ok((hits, misses, products))
    })
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
    ledger: &SqliteLedger,
    sku: &str,
    now: i64,
) -> Result<Option<CachedAliasItem>, JobError> {
    let key = alias_sku_key(sku);
    ledger.with_read_conn(|conn| {
        let row: Option<(Option<String>, String, i64)> = conn
            .prepare_cached(
                "SELECT catalog_id, sizes, expires_at FROM alias_catalog WHERE sku_key = ?1 AND expires_at > ?2",
            )?
            .query_row(params![key, now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .optional()?;
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
    })
}

/// Remembers that `sku` is Alias catalog item `catalog_id` listing `sizes` (`None`: a
/// miss) until `now + ttl_secs`. At most [`MAX_ALIAS_SIZES`] sizes are kept.
pub fn put_alias_item(
    ledger: &SqliteLedger,
    sku: &str,
    catalog_id: Option<&str>,
    sizes: &[f64],
    now: i64,
    ttl_secs: i64,
) -> Result<(), JobError> {
    let key = alias_sku_key(sku);
    let sizes_text = sizes
        .iter()
        .take(MAX_ALIAS_SIZES)
        .filter(|size| size.is_finite() && **size > 0.0)
        .map(|size| format!("{size}"))
        .collect::<Vec<_>>()
        .join(",");
    ledger.with_conn(|conn| {
        conn.prepare_cached(
            "INSERT INTO alias_catalog (sku_key, sku, catalog_id, sizes, resolved_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (sku_key) DO UPDATE SET sku = excluded.sku,
                 catalog_id = excluded.catalog_id, sizes = excluded.sizes,
                 resolved_at = excluded.resolved_at, expires_at = excluded.expires_at",
        )?
        .execute(params![
            key,
            sku.trim(),
            catalog_id,
            sizes_text,
            now,
            now.saturating_add(ttl_secs.max(1))
        ])?;
        Ok(())
    })
}

/// Forgets the Alias cache entry of `sku`: called when Alias says its catalog id is gone;
/// the next lookup searches again.
pub fn forget_alias_sku(ledger: &SqliteLedger, sku: &str) -> Result<(), JobError> {
    let key = alias_sku_key(sku);
    ledger.with_conn(|conn| {
        conn.prepare_cached("DELETE FROM alias_catalog WHERE sku_key = ?1")?
            .execute(params![key])?;
        Ok(())
    })
}

/// Counts of the Alias cache: (style ids resolved to an item, remembered misses),
/// unexpired at `now`.
pub fn alias_cache_counts(ledger: &SqliteLedger, now: i64) -> Result<(i64, i64), JobError> {
    ledger.with_read_conn(|conn| {
        conn.prepare_cached(
            "SELECT COALESCE(SUM(catalog_id IS NOT NULL), 0), COALESCE(SUM(catalog_id IS NULL), 0)
             FROM alias_catalog WHERE expires_at > ?1",
        )?
        .query_row(params![now], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(JobError::from)
    })
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
