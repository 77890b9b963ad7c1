-- The eBay `inquiries` and `purchases` streams (issue 14, point 1).
--
-- ebay_inquiries: the seller's Post-Order INR inquiries (GET /post-order/v2/inquiry/search,
-- InquirySummaryType), read by creation date. status is InquiryStatusEnum (OPEN,
-- WAITING_SELLER_RESPONSE, WAITING_BUYER_RESPONSE, PENDING, OTHER still move; CLOSED,
-- CLOSED_WITH_ESCALATION, CS_CLOSED are final); its changes go to `events` under stream
-- `inquiries`. A live run re-reads back to the oldest inquiry still open
-- (src/store/ebay_inquiries.rs, OPEN_INQUIRIES), which the index answers without a scan.
CREATE TABLE ebay_inquiries (
    account           TEXT NOT NULL,
    inquiry_id        TEXT NOT NULL,
    status            TEXT NOT NULL,
    creation_date     TEXT NOT NULL,
    last_modified     TEXT,
    respond_by        TEXT,
    claim_value       TEXT,
    currency          TEXT,
    item_id           TEXT,
    transaction_id    TEXT,
    raw               TEXT NOT NULL,      -- the inquiry as served, JSON
    first_seen_at     INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (account, inquiry_id)
) WITHOUT ROWID;
CREATE INDEX ebay_inquiries_by_status ON ebay_inquiries (account, status, creation_date);

-- ebay_purchases: the seller's own purchases as a buyer (Trading API GetOrders with
-- OrderRole=Buyer, XML), read by modification time (ModTimeFrom/ModTimeTo): a change
-- moves the order into a later window, so no re-read is needed. OrderStatus, PaidTime
-- and ShippedTime are history (stream `purchases`).
CREATE TABLE ebay_purchases (
    account           TEXT NOT NULL,
    order_id          TEXT NOT NULL,
    order_status      TEXT NOT NULL,
    created_time      TEXT NOT NULL,
    last_modified     TEXT,
    paid_time         TEXT,
    shipped_time      TEXT,
    total_value       TEXT,
    currency          TEXT,
    seller_user_id    TEXT,
    raw               TEXT NOT NULL,      -- the parsed Order, JSON (the wire is XML)
    first_seen_at     INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (account, order_id)
) WITHOUT ROWID;
