-- The Alias catalog cache: which catalog item a style id is and the US sizes it is sold
-- in (Alias's pricing insights take a catalog_id and a size). See docs/jobs.md "Alias
-- market prices". Like the StockX cache (0008) these rows are facts about Alias, not
-- ledger data: written outside the job fence, and they may be dropped at any time (the
-- next lookup searches again).

-- A style id's catalog item, or a miss (catalog_id NULL: Alias's catalog search has no
-- item with this style id), each until expires_at.
CREATE TABLE alias_catalog (
    sku_key     TEXT PRIMARY KEY,              -- the style id's letters and digits, upper-cased
    sku         TEXT NOT NULL,                 -- as the job names it
    catalog_id  TEXT,                          -- NULL for a miss
    sizes       TEXT NOT NULL DEFAULT '',      -- the item's US sizes, comma-separated ('' = not listed)
    resolved_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
