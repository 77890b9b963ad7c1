-- The eBay streams added for issue 14 (seed 003): their tables and indexes.

-- transactions: a live run re-reads back to the oldest stored transaction whose status
-- is not final yet (src/store/ebay_streams.rs, oldest_open); this index answers it
-- without a scan of every transaction of the account.
CREATE INDEX ebay_transactions_by_status
    ON ebay_transactions (account, transaction_status, transaction_date);

-- finances: the seller's payouts (Finances getPayouts), read by payoutDate. payoutStatus
-- moves (INITIATED -> SUCCEEDED, or RETRYABLE_FAILED / REVERSED -> retried); changes go
-- to `events` under stream `finances`.
CREATE TABLE ebay_payouts (
    account           TEXT NOT NULL,
    payout_id         TEXT NOT NULL,
    payout_date       TEXT NOT NULL,
    payout_status     TEXT NOT NULL,
    amount_value      TEXT,
    currency          TEXT,
    transaction_count INTEGER,
    instrument_type   TEXT,
    raw               TEXT NOT NULL,      -- the payout as served, JSON
    first_seen_at     INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (account, payout_id)
) WITHOUT ROWID;
CREATE INDEX ebay_payouts_by_status ON ebay_payouts (account, payout_status, payout_date);

-- offers: the seller's Sell Inventory offers, a snapshot per run (getInventoryItems for
-- the SKUs, getOffers per SKU). available_quantity is text as the history compares it.
CREATE TABLE ebay_offers (
    account            TEXT NOT NULL,
    offer_id           TEXT NOT NULL,
    sku                TEXT NOT NULL,
    status             TEXT,
    listing_id         TEXT,
    listing_status     TEXT,
    price_value        TEXT,
    currency           TEXT,
    available_quantity TEXT,
    raw                TEXT NOT NULL,
    first_seen_at      INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (account, offer_id)
) WITHOUT ROWID;

-- messages: the buyers' conversations (Message API getConversations), by the time of
-- their latest message; a live run re-reads back to the oldest unread one.
CREATE TABLE ebay_conversations (
    account             TEXT NOT NULL,
    conversation_id     TEXT NOT NULL,
    conversation_type   TEXT,
    conversation_status TEXT,
    created_date        TEXT,
    latest_message_id   TEXT,
    latest_message_date TEXT,
    read_status         TEXT,               -- "true" / "false", as the history compares it
    unread_count        TEXT,
    sender              TEXT,
    raw                 TEXT NOT NULL,
    first_seen_at       INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (account, conversation_id)
) WITHOUT ROWID;
CREATE INDEX ebay_conversations_by_read
    ON ebay_conversations (account, read_status, latest_message_date);
