-- The freshness scheduler (issue 15 point 5, seed 002): tracked keys and the record of
-- every scheduler pass. See docs/jobs.md, "Freshness scheduler".

-- One row per key the scheduler keeps fresh. `dedupe_key` is the job queue's key
-- (provider|sku|size, keepa|ASIN), so a key's last result is found in `jobs`.
CREATE TABLE tracked_items (
    provider    TEXT NOT NULL,
    sku         TEXT NOT NULL,
    size        TEXT NOT NULL DEFAULT '',       -- '' when the key has none (Keepa)
    dedupe_key  TEXT NOT NULL UNIQUE,
    added_at    INTEGER NOT NULL,               -- unix s
    source      TEXT NOT NULL,                  -- cli | import | api | bench
    PRIMARY KEY (provider, sku, size)
);

-- A key's last ended job (succeeded, not_found, failed) is looked up per pass.
CREATE INDEX jobs_key_finished ON jobs (dedupe_key, state, finished_at);

-- Seed 002's market_job_runs: one row per provider per scheduler pass.
CREATE TABLE market_job_runs (
    id           INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    tracked      INTEGER NOT NULL,              -- tracked keys of the provider
    fresh        INTEGER NOT NULL,              -- keys whose last success is within stale_after
    stale_after  INTEGER NOT NULL,              -- seconds, as used by this pass
    live         INTEGER NOT NULL,              -- keys with a pending or running job: skipped
    selected     INTEGER NOT NULL,              -- jobs this pass queued (hot + background)
    hot          INTEGER NOT NULL,              -- of those: never fetched (priority 150)
    background   INTEGER NOT NULL,              -- of those: stale (priority 100)
    merged       INTEGER NOT NULL,              -- selected keys that had a live job by then
    deferred     INTEGER NOT NULL,              -- due keys left for a later pass (budget, cap)
    budget_left  REAL NOT NULL,                 -- jobs the buckets could serve before the next pass
    outcome      TEXT NOT NULL                  -- ok | no_budget | no_accounts | error
);

CREATE INDEX market_job_runs_started ON market_job_runs (started_at DESC, id DESC);
