//! The StockX catalog cache (migration 0008): a style id's catalog product (or a
//! remembered miss) and a product's variants by size, each with an expiry. The drainer
//! reads it before spending a call and writes what StockX answered; a product or variant
//! StockX says is gone is forgotten ([`forget_stockx_style`]) and resolved again.
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
}
