-- The hour ledger (seed 000): one row per (account, stream, hour_utc).
-- Times are unix seconds; hour_utc is the start of the hour.
CREATE TABLE ledger_hours (
    account            TEXT    NOT NULL,
    stream             TEXT    NOT NULL,
    hour_utc           INTEGER NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('MISSING', 'REQUESTED', 'DOWNLOADED', 'APPLIED', 'FAILED')),
    priority           INTEGER NOT NULL DEFAULT 100,
    attempts           INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    next_retry_at      INTEGER,
    claim_id           INTEGER,
    claimed_by         TEXT,
    fence              INTEGER,
    report_id          TEXT,
    report_document_id TEXT,
    document_path      TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    applied_at         INTEGER,
    PRIMARY KEY (account, stream, hour_utc)
) WITHOUT ROWID;

-- Claimable rows in claim order; partial so it stays small once hours are APPLIED.
CREATE INDEX ledger_hours_claimable
    ON ledger_hours (account, stream, priority DESC, hour_utc DESC)
    WHERE state IN ('MISSING', 'FAILED');
CREATE INDEX ledger_hours_claim ON ledger_hours (claim_id);

-- Every claim ever made: one report request over a contiguous run of hours.
-- Kept as history so "who worked this scope when" can be answered.
CREATE TABLE ledger_claims (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    start_hour  INTEGER NOT NULL,
    end_hour    INTEGER NOT NULL,
    claimed_by  TEXT    NOT NULL,
    fence       INTEGER,
    claimed_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT
);
CREATE INDEX ledger_claims_scope ON ledger_claims (account, stream, id);

-- Cooldowns persist so a restart does not resume hammering a provider that said no.
CREATE TABLE cooldowns (
    scope      TEXT    PRIMARY KEY,
    reason     TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    until_at   INTEGER NOT NULL,
    detail     TEXT
);

-- When each audit last ran, per (account, stream, kind).
CREATE TABLE audits (
    account     TEXT    NOT NULL,
    stream      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    last_run_at INTEGER NOT NULL,
    PRIMARY KEY (account, stream, kind)
);

-- GET_VENDOR_REAL_TIME_SALES_REPORT rows, one per (account, hour, asin).
CREATE TABLE vendor_realtime_sales (
    account         TEXT    NOT NULL,
    hour_utc        INTEGER NOT NULL,
    asin            TEXT    NOT NULL,
    ordered_units   INTEGER NOT NULL,
    ordered_revenue REAL    NOT NULL,
    report_id       TEXT,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (account, hour_utc, asin)
) WITHOUT ROWID;

-- The newest lease fence seen per scope: a write carrying an older fence comes from an
-- owner whose lease was taken over, and is refused.
CREATE TABLE scope_fences (
    account    TEXT    NOT NULL,
    stream     TEXT    NOT NULL,
    fence      INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (account, stream)
) WITHOUT ROWID;
