-- Supervision state of account actors, one row per account (as migrations/0002 in the
-- SQLite file): in PostgreSQL with the hour ledger, so a quarantine follows an account
-- that moves to another member. Times are unix seconds.
CREATE TABLE account_supervision (
    account           TEXT    PRIMARY KEY,
    state             TEXT    NOT NULL CHECK (state IN ('running', 'backing_off', 'quarantined', 'halted', 'stopped')),
    restarts          BIGINT  NOT NULL DEFAULT 0,
    last_crash_at     BIGINT,
    last_crash_reason TEXT,
    quarantined_until BIGINT,
    resume_requested  BIGINT  NOT NULL DEFAULT 0,
    updated_at        BIGINT  NOT NULL,
    state_reason      TEXT
);
