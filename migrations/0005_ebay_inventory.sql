-- eBay active inventory (Sell Feed LMS_ACTIVE_INVENTORY_REPORT snapshots, src/shapes/cursor/inventory.rs).

-- One row per listed SKU: (ItemID, SKU) as the report names it; sku is '' for a listing
-- without a seller SKU. A SKU missing from a later snapshot stays, ENDED with quantity 0.
CREATE TABLE ebay_inventory (
    account       TEXT NOT NULL,
    item_id       TEXT NOT NULL,
    sku           TEXT NOT NULL,
    quantity      INTEGER NOT NULL,      -- Quantity: available for sale (0 once ended)
    price         TEXT,                  -- Price as served (decimal text)
    currency      TEXT,                  -- Price@currencyID
    state         TEXT NOT NULL,         -- ACTIVE | ENDED
    snapshot      INTEGER NOT NULL,      -- the snapshot (per account, counting up) that last saw it
    first_seen_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (account, item_id, sku)
) WITHOUT ROWID;
CREATE INDEX ebay_inventory_by_snapshot ON ebay_inventory (account, state, snapshot);

-- The Feed task a snapshot stream is waiting for, until its file is applied (or the task
-- is given up): a run interrupted while polling or downloading (shutdown, a 5xx, a lost
-- lease) resumes it instead of spending another of eBay's 25 tasks a day.
CREATE TABLE ebay_feed_tasks (
    account    TEXT NOT NULL,
    stream     TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,          -- unix seconds: when the task was created (the snapshot's time)
    PRIMARY KEY (account, stream)
) WITHOUT ROWID;
