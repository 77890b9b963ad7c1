-- The keyed job queue (StockX market data, Keepa products): jobs, results, per-run metrics.
-- See docs/jobs.md for the states, priorities, dedupe and leases.

-- One row per run of a lookup. A key (dedupe_key) has at most one live (pending or
-- running) row; finished rows stay as history and a new enqueue of the key adds a row.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    provider    TEXT NOT NULL,                 -- stockx | keepa
    sku         TEXT NOT NULL,                 -- StockX style id, Keepa ASIN
    size        TEXT,                          -- StockX size; NULL for Keepa
    dedupe_key  TEXT NOT NULL,                 -- provider|sku|size (keepa|ASIN)
    priority    INTEGER NOT NULL,              -- 200 manual, 150 hot, 100 background
    state       TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'not_found')),
    attempts    INTEGER NOT NULL DEFAULT 0,    -- failed tries (5xx, timeouts); 429s do not count
    error       TEXT,
    not_before  INTEGER NOT NULL,              -- unix s: not claimed before (retry, deferral)
    lease_owner TEXT,                          -- account/owner of the run working it
    lease_until INTEGER,                       -- unix s: rescued to pending after this
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    source      TEXT NOT NULL                  -- deal | backfill | cli | api | ...
);

CREATE UNIQUE INDEX jobs_live_key ON jobs (dedupe_key) WHERE state IN ('pending', 'running');
CREATE INDEX jobs_claim ON jobs (provider, state, priority DESC, created_at, id);
CREATE INDEX jobs_state ON jobs (state, updated_at);

-- The latest market data per (provider, sku, size); size '' when the key has none.
CREATE TABLE market_prices (
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size        TEXT NOT NULL DEFAULT '',
    lowest_ask  REAL,
    highest_bid REAL,
    last_sale   REAL,
    currency    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    job_id      INTEGER,
    PRIMARY KEY (provider, sku, size)
);

-- The latest complete Keepa snapshot per (asin, domain). Prices are in cents as Keepa
-- sends them (-1: none); only products with their history and stats are written.
CREATE TABLE keepa_products (
    asin            TEXT NOT NULL,
    domain          INTEGER NOT NULL,
    title           TEXT,
    current_amazon  INTEGER,
    current_new     INTEGER,
    sales_rank      INTEGER,
    avg_90_new      INTEGER,
    avg_365_new     INTEGER,                   -- the "1yr avg" of seed 004
    history_points  INTEGER NOT NULL,          -- price points in the csv history
    raw             TEXT NOT NULL,             -- the product JSON as received
    updated_at      INTEGER NOT NULL,
    job_id          INTEGER,
    PRIMARY KEY (asin, domain)
);

-- One row per run of a drainer that did something (claimed, rescued).
CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY,
    provider    TEXT NOT NULL,
    account     TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    jobs_run    INTEGER NOT NULL,
    succeeded   INTEGER NOT NULL,
    failed      INTEGER NOT NULL,              -- attempts that failed (retried or terminal)
    deferred    INTEGER NOT NULL,              -- back to pending without an attempt (429, auth, quota wait)
    not_found   INTEGER NOT NULL,
    calls_made  INTEGER NOT NULL,
    rescued     INTEGER NOT NULL,              -- running jobs whose lease had expired
    outcome     TEXT NOT NULL                  -- finished | cooldown | deferred | cancelled
);

CREATE INDEX job_runs_started ON job_runs (started_at DESC);
