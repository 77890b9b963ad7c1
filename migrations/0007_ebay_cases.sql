-- The eBay `cases` stream (issue 14, point 1): the seller's Post-Order cases
-- (GET /post-order/v2/casemanagement/search), read by creation date.
-- status is CaseStatusEnum (OPEN, WAITING_DELIVERY, ON_HOLD, WAITING_CS, ... CLOSED,
-- CS_CLOSED); its changes go to `events` under stream `cases`. A live run re-reads back
-- to the oldest case not closed yet (src/store/ebay_cases.rs, OPEN_CASES), which the
-- index answers without a scan.
CREATE TABLE ebay_cases (
    account         TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    case_type       TEXT,
    status          TEXT NOT NULL,
    creation_date   TEXT NOT NULL,
    claim_value     TEXT,
    currency        TEXT,
    item_id         TEXT,
    transaction_id  TEXT,
    raw             TEXT NOT NULL,      -- the case as served, JSON
    first_seen_at   INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (account, case_id)
) WITHOUT ROWID;
CREATE INDEX ebay_cases_by_status ON ebay_cases (account, status, creation_date);
