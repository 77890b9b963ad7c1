-- Supervision state of account actors (src/supervisor/store.rs), one row per account.
-- Written by the daemon's AccountsSupervisor; read by `marketsync status` (another
-- process); `marketsync accounts resume ID` sets resume_requested, which the supervisor's
-- heartbeat picks up. Times are unix seconds.
CREATE TABLE account_supervision (
    account           TEXT    PRIMARY KEY,
    state             TEXT    NOT NULL CHECK (state IN ('running', 'backing_off', 'quarantined', 'halted', 'stopped')),
    restarts          INTEGER NOT NULL DEFAULT 0,
    last_crash_at     INTEGER,
    last_crash_reason TEXT,
    quarantined_until INTEGER,
    resume_requested  INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    -- Why the account is in its state: the crash that quarantined it, or the mass failure
    -- that halted restarts.
    state_reason      TEXT
);
