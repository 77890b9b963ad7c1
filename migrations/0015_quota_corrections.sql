-- Burst corrections (issue 12 point 4): a 429 to a paced call is read as "my model of this
-- bucket is wrong", not as a stop. The TokenManager empties the bucket and lowers its
-- learned burst; the last correction of each bucket is recorded here so that
-- `marketsync cooldowns` (and its --json) shows it beside the cooldowns, after the
-- daemon stopped too. Informational: the live burst is the TokenManager's.
CREATE TABLE quota_corrections (
    bucket           TEXT NOT NULL PRIMARY KEY,   -- provider/operation/scope
    configured_burst REAL NOT NULL,               -- configured or documented, before any correction
    burst            REAL NOT NULL,               -- the burst the last correction left
    corrections      INTEGER NOT NULL,            -- 429s read as corrections, counted over restarts
    first_at         INTEGER NOT NULL,            -- unix seconds
    last_at          INTEGER NOT NULL,
    detail           TEXT                         -- the provider's answer (no secret)
) WITHOUT ROWID;
