-- Cursor streams (eBay): cursors, resources and change history (src/cursor/).

-- One cursor per (account, stream): everything modified before cursor_ts is applied.
-- It moves only in the transaction that applies a window's data.
CREATE TABLE cursors (
    account     TEXT NOT NULL,
    stream      TEXT NOT NULL,
    cursor_ts   INTEGER NOT NULL,          -- unix seconds, exclusive end of applied data
    updated_at  INTEGER NOT NULL,          -- when cursor_ts last moved
    last_run_at INTEGER,                   -- when a window was last attempted
    last_error  TEXT,                      -- the latest failed window's error, NULL after a success
    failures    INTEGER NOT NULL DEFAULT 0,-- consecutive failed windows
    retry_at    INTEGER,                   -- a failed window is not retried before this
    PRIMARY KEY (account, stream)
) WITHOUT ROWID;

CREATE TABLE ebay_orders (
    account            TEXT NOT NULL,
    order_id           TEXT NOT NULL,
    creation_date      TEXT NOT NULL,
    last_modified_date TEXT NOT NULL,
    fulfillment_status TEXT NOT NULL,
    payment_status     TEXT NOT NULL,
    total_value        TEXT,
    currency           TEXT,
    buyer              TEXT,
    raw                TEXT NOT NULL,      -- the order as served, JSON
    first_seen_at      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (account, order_id)
) WITHOUT ROWID;
CREATE INDEX ebay_orders_by_modified ON ebay_orders (account, last_modified_date);

CREATE TABLE ebay_transactions (
    account            TEXT NOT NULL,
    transaction_id     TEXT NOT NULL,
    transaction_type   TEXT NOT NULL,
    transaction_date   TEXT NOT NULL,
    transaction_status TEXT,
    amount_value       TEXT,
    currency           TEXT,
    order_id           TEXT,
    raw                TEXT NOT NULL,
    first_seen_at      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (account, transaction_id)
) WITHOUT ROWID;

CREATE TABLE ebay_returns (
    account       TEXT NOT NULL,
    return_id     TEXT NOT NULL,
    order_id      TEXT,
    creation_date TEXT NOT NULL,
    state         TEXT NOT NULL,
    return_type   TEXT,
    raw           TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (account, return_id)
) WITHOUT ROWID;

-- Change history: one row per changed field of a resource seen before. First sight and
-- an unchanged resource seen again append nothing.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    stream      TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    field       TEXT NOT NULL,
    before      TEXT,
    after       TEXT,
    observed_at INTEGER NOT NULL
);
CREATE INDEX events_by_account ON events (account, id);
CREATE INDEX events_by_resource ON events (account, stream, resource_id);
