//! The keyed job queue (seeds 002, 004): on-demand lookups (`provider|sku|size`, Keepa
//! ASINs) with dedupe, priorities 200 manual / 150 hot / 100 background, leases that
//! rescue jobs whose worker died, and per-run metrics.
