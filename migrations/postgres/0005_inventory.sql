-- The eBay `active_inventory` snapshot on PostgreSQL: the tables of
-- migrations/0005_ebay_inventory.sql and 0013_ebay_inventory_merge.sql with the same
-- names and columns (so `marketsync store copy` maps them one to one). The stream's
-- cursor row, history and fence live in `cursors`, `events` and `scope_fences` with the
-- other streams' (0003_cursors.sql, 0001_ledger.sql). Text keys are compared and sorted
-- in byte order (COLLATE "C" in the queries), as SQLite's BINARY does.

-- One row per listed SKU: (ItemID, SKU) as the report names it; sku is '' for a listing
-- without a seller SKU. A SKU missing from a later snapshot stays, ENDED with quantity 0.
CREATE TABLE ebay_inventory (
    account       TEXT   NOT NULL,
    item_id       TEXT   NOT NULL,
    sku           TEXT   NOT NULL,
    quantity      BIGINT NOT NULL,      -- Quantity: available for sale (0 once ended)
    price         TEXT,                 -- Price as served (decimal text)
    currency      TEXT,                 -- Price@currencyID
    state         TEXT   NOT NULL,      -- ACTIVE | ENDED
    snapshot      BIGINT NOT NULL,      -- the snapshot (per account, counting up) that last wrote it
    first_seen_at BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (account, item_id, sku)
);

-- The last snapshot applied per account (counting up from 1).
CREATE TABLE ebay_inventory_snapshots (
    account  TEXT   NOT NULL PRIMARY KEY,
    snapshot BIGINT NOT NULL
);

-- The Feed task a snapshot stream is waiting for, until its file is applied (or the task
-- is given up): an interrupted run resumes it instead of spending another of eBay's 25
-- tasks a day.
CREATE TABLE ebay_feed_tasks (
    account    TEXT   NOT NULL,
    stream     TEXT   NOT NULL,
    task_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,         -- unix seconds: when the task was created (the snapshot's time)
    PRIMARY KEY (account, stream)
);
