-- The StockX catalog cache: which catalog product a style id is, and which variant a
-- size is (StockX's v2 API addresses market data by product and variant UUID). See
-- docs/jobs.md "StockX catalog resolution". Cache rows are facts about StockX, not ledger
-- data: they are written outside the job fence and may be dropped at any time (the next
-- lookup resolves again).

-- A style id's product, or a miss (product_id NULL: StockX's search has no product with
-- this style id), each until expires_at.
CREATE TABLE stockx_styles (
    style_key   TEXT PRIMARY KEY,              -- the style id, trimmed and lower-cased
    style_id    TEXT NOT NULL,                 -- as the job names it
    product_id  TEXT,                          -- catalog UUID; NULL for a miss
    title       TEXT,
    resolved_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- When a product's variant list was fetched; its variants are in stockx_variants.
CREATE TABLE stockx_products (
    product_id  TEXT PRIMARY KEY,
    resolved_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    variants    INTEGER NOT NULL               -- how many variants the list had
);

-- One row per way a size names a variant: variantValue ("10") and every size-chart entry
-- ("us m 10", "uk 9"), lower-cased.
CREATE TABLE stockx_variants (
    product_id  TEXT NOT NULL REFERENCES stockx_products (product_id) ON DELETE CASCADE,
    size_key    TEXT NOT NULL,
    variant_id  TEXT NOT NULL,
    PRIMARY KEY (product_id, size_key)
);
