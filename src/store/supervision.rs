//! Supervision state in SQLite: table `account_supervision` (migration
//! `0002_supervision.sql`), one row per account, times in unix seconds.
//!
//! Purpose: a quarantine survives a daemon restart (a poison account is not re-run
//! straight away), `marketsync status` (a separate process) can show the supervision state,
//! and `marketsync accounts resume ID` can ask the running daemon to resume an account.
//!
//! Options: none. Functions take a `rusqlite::Connection` (through
//! `SqliteLedger::with_conn`; from async code run them on the blocking pool).
//!
//! Emits: rows. [`save`] never touches `resume_requested` (only [`request_resume`] sets it
//! and [`take_resume_requests`] clears it), so a request made by the CLI between two
//! saves of the daemon is not lost.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, Row};

use crate::domain::supervision::{ChildState, ChildStatus, CrashInfo};

/// One row of `account_supervision`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChild {
    pub account: String,
    pub state: ChildState,
    pub restarts: u64,
    /// Unix seconds.
    pub last_crash_at: Option<i64>,
    pub last_crash_reason: Option<String>,
    /// Unix seconds; the probe time of a quarantined account.
    pub quarantined_until: Option<i64>,
    /// Why the account is in its state (the quarantining crash, the mass failure).
    pub state_reason: Option<String>,
    pub resume_requested: bool,
    /// Unix seconds of the last write.
    pub updated_at: i64,
}

impl StoredChild {
    /// The row as `status --json` shows it.
    pub fn to_status(&self) -> ChildStatus {
        let last_crash = match (self.last_crash_at, &self.last_crash_reason) {
            (Some(at), reason_opt) => Some(CrashInfo {
                at_utc: unix_to_rfc3339(at),
                reason: reason_opt.clone().unwrap_or_default(),
            }),
            (None, _) => None,
        };
        ChildStatus {
            id: self.account.clone(),
            state: self.state,
            restarts: self.restarts,
            last_crash,
            quarantined_until: self.quarantined_until.map(unix_to_rfc3339),
            reason: self.state_reason.clone(),
        }
    }
}

/// RFC 3339 in UTC with whole seconds, e.g. `2025-12-03T10:00:00Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn unix_to_rfc3339(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .map(rfc3339)
        .unwrap_or_else(|| secs.to_string())
}

fn row_to_stored(row: &Row<'_>) -> Result<StoredChild, rusqlite::Error> {
    let state_text: String = row.get(1)?;
    let state = ChildState::parse(&state_text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            Type::Text,
            format!("unknown supervision state {state_text:?}").into(),
        )
    })?;
    let restarts: i64 = row.get(2)?;
    Ok(StoredChild {
        account: row.get(0)?,
        state,
        restarts: u64::try_from(restarts).unwrap_or(0),
        last_crash_at: row.get(3)?,
        last_crash_reason: row.get(4)?,
        quarantined_until: row.get(5)?,
        resume_requested: row.get::<_, i64>(6)? != 0,
        updated_at: row.get(7)?,
        state_reason: row.get(8)?,
    })
}

/// Every row, ordered by account.
pub fn load(conn: &Connection) -> Result<Vec<StoredChild>, rusqlite::Error> {
    let mut statement = conn.prepare_cached(
        "SELECT account, state, restarts, last_crash_at, last_crash_reason, quarantined_until,
                resume_requested, updated_at, state_reason
         FROM account_supervision ORDER BY account",
    )?;
    let rows = statement
        .query_map([], row_to_stored)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Upserts `rows` in one transaction, stamping `updated_at = now_unix`. Leaves
/// `resume_requested` as it is.
pub fn save(
    conn: &mut Connection,
    rows: &[StoredChild],
    now_unix: i64,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut statement = tx.prepare_cached(
            "INSERT INTO account_supervision
                 (account, state, restarts, last_crash_at, last_crash_reason, quarantined_until,
                  updated_at, state_reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (account) DO UPDATE SET
                 state = excluded.state,
                 restarts = excluded.restarts,
                 last_crash_at = excluded.last_crash_at,
                 last_crash_reason = excluded.last_crash_reason,
                 quarantined_until = excluded.quarantined_until,
                 updated_at = excluded.updated_at,
                 state_reason = excluded.state_reason",
        )?;
        for row in rows {
            statement.execute(params![
                row.account,
                row.state.as_str(),
                i64::try_from(row.restarts).unwrap_or(i64::MAX),
                row.last_crash_at,
                row.last_crash_reason,
                row.quarantined_until,
                now_unix,
                row.state_reason,
            ])?;
        }
    }
    tx.commit()
}

/// Asks the running daemon to resume a quarantined account (its next heartbeat clears the
/// quarantine and the crash history and restarts it). Returns false when the account has
/// no row or is not quarantined.
pub fn request_resume(conn: &Connection, account: &str) -> Result<bool, rusqlite::Error> {
    let changed = conn
        .prepare_cached(
            "UPDATE account_supervision SET resume_requested = 1, updated_at = ?2
         WHERE account = ?1 AND state = 'quarantined'",
        )?
        .execute(params![account, Utc::now().timestamp()])?;
    Ok(changed > 0)
}

/// The accounts among `accounts` with a pending resume request; clears their flag in the
/// same transaction. Requests for other accounts stay pending.
pub fn take_resume_requests(
    conn: &mut Connection,
    accounts: &[String],
) -> Result<Vec<String>, rusqlite::Error> {
    let tx = conn.transaction()?;
    let mut taken = Vec::new();
    {
        let mut pending = tx.prepare_cached(
            "SELECT account FROM account_supervision WHERE resume_requested = 1 ORDER BY account",
        )?;
        let requested = pending
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut clear = tx.prepare_cached(
            "UPDATE account_supervision SET resume_requested = 0 WHERE account = ?1",
        )?;
        for account in requested {
            if accounts.contains(&account) {
                clear.execute(params![account])?;
                taken.push(account);
            }
        }
    }
    tx.commit()?;
    Ok(taken)
}

/// Every account's supervision status, as the last daemon wrote it (for `marketsync status`).
pub fn statuses(conn: &Connection) -> Result<Vec<ChildStatus>, rusqlite::Error> {
    Ok(load(conn)?.iter().map(StoredChild::to_status).collect())
}

/// The stored state of `account` (`running`, `quarantined`, ...), if it was ever supervised.
pub fn state_of(conn: &Connection, account: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT state FROM account_supervision WHERE account = ?1")?
        .query_row(params![account], |row| row.get(0))
        .optional()
}

/// Where the accounts supervisor keeps its rows: the SQLite file, or PostgreSQL when the
/// hour ledger is there (`[store] url_env`), so a quarantine follows an account that
/// moves to another member. Every engine of [`super::LedgerStore`] is one.
pub trait SupervisionStore: Send + Sync + 'static {
    /// Every row, ordered by account.
    fn load_children(&self) -> Result<Vec<StoredChild>, super::LedgerError>;
    /// Upserts `rows` in one transaction (see [`save`]).
    fn save_children(&self, rows: &[StoredChild], now_unix: i64) -> Result<(), super::LedgerError>;
    /// Takes the pending resume requests among `accounts` (see [`take_resume_requests`]).
    fn take_resume_requests(&self, accounts: &[String]) -> Result<Vec<String>, super::LedgerError>;
    /// Asks the running daemon to resume a quarantined account (see [`request_resume`]).
    fn request_resume(&self, account: &str) -> Result<bool, super::LedgerError>;
    /// The stored state of `account`, if it was ever supervised.
    fn child_state(&self, account: &str) -> Result<Option<String>, super::LedgerError>;
    /// True when several daemons share these rows (PostgreSQL): a member that hands an
    /// account over then leaves its row to the new owner instead of writing `stopped`
    /// over what the new owner may already have written.
    fn supervision_is_shared(&self) -> bool {
        false
    }

    /// Every account's supervision status, as the daemons last wrote it.
    fn supervision_statuses(&self) -> Result<Vec<ChildStatus>, super::LedgerError> {
        Ok(self
            .load_children()?
            .iter()
            .map(StoredChild::to_status)
            .collect())
    }
}

impl SupervisionStore for super::SqliteLedger {
    fn load_children(&self) -> Result<Vec<StoredChild>, super::LedgerError> {
        Ok(self.with_read_conn(load)?)
    }

    fn save_children(&self, rows: &[StoredChild], now_unix: i64) -> Result<(), super::LedgerError> {
        Ok(self.with_conn(|conn| save(conn, rows, now_unix))?)
    }

    fn take_resume_requests(&self, accounts: &[String]) -> Result<Vec<String>, super::LedgerError> {
        Ok(self.with_conn(|conn| take_resume_requests(conn, accounts))?)
    }

    fn request_resume(&self, account: &str) -> Result<bool, super::LedgerError> {
        Ok(self.with_conn(|conn| request_resume(conn, account))?)
    }

    fn child_state(&self, account: &str) -> Result<Option<String>, super::LedgerError> {
        Ok(self.with_read_conn(|conn| state_of(conn, account))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteLedger;

    fn row(account: &str, state: ChildState) -> StoredChild {
        StoredChild {
            account: account.to_string(),
            state,
            restarts: 7,
            last_crash_at: Some(1_764_756_000),
            last_crash_reason: Some("poison".to_string()),
            quarantined_until: (state == ChildState::Quarantined).then_some(1_764_759_600),
            state_reason: Some("crashed 6 times".to_string()),
            resume_requested: false,
            updated_at: 0,
        }
    }

    #[test]
    fn save_then_load_round_trips_and_statuses_format_rfc3339() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        ledger.with_conn(|conn| {
            save(
                conn,
                &[
                    row("b", ChildState::Running),
                    row("a", ChildState::Quarantined),
                ],
                42,
            )
            .unwrap();
            let loaded = load(conn).unwrap();
            assert_eq!(loaded.len(), 2);
            assert_eq!(
                loaded[0],
                StoredChild {
                    updated_at: 42,
                    ..row("a", ChildState::Quarantined)
                }
            );
            let statuses = statuses(conn).unwrap();
            assert_eq!(statuses[0].state, ChildState::Quarantined);
            assert_eq!(
                statuses[0].quarantined_until.as_deref(),
                Some("2025-12-03T11:00:00Z")
            );
            assert_eq!(
                statuses[0].last_crash,
                Some(CrashInfo {
                    at_utc: "2025-12-03T10:00:00Z".to_string(),
                    reason: "poison".to_string()
                })
            );
        });
    }

    #[test]
    fn request_resume_only_for_quarantined_rows_and_survives_saves() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        ledger.with_conn(|conn| {
            save(
                conn,
                &[
                    row("quarantined", ChildState::Quarantined),
                    row("running", ChildState::Running),
                ],
                1,
            )
            .unwrap();
            assert!(!request_resume(conn, "unknown").unwrap());
            assert!(!request_resume(conn, "running").unwrap());
            assert!(request_resume(conn, "quarantined").unwrap());
            save(conn, &[row("quarantined", ChildState::Quarantined)], 2).unwrap();
            let taken = take_resume_requests(conn, &["running".to_string()]).unwrap();
            assert!(taken.is_empty(), "requests for other accounts stay pending");
            let all = ["running".to_string(), "quarantined".to_string()];
            assert_eq!(
                take_resume_requests(conn, &all).unwrap(),
                vec!["quarantined".to_string()]
            );
            assert!(take_resume_requests(conn, &all).unwrap().is_empty());
        });
    }
}
