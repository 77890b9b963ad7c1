//! The accounts supervisor's rows on PostgreSQL ([`SupervisionStore`]), the same table
//! and rules as the SQLite file's (`store::supervision`).

use chrono::Utc;

use super::PgLedger;
use crate::domain::supervision::ChildState;
use crate::store::supervision::{StoredChild, SupervisionStore};
use crate::store::LedgerError;

const COLUMNS: &str = "account, state, restarts, last_crash_at, last_crash_reason, \
                       quarantined_until, resume_requested, updated_at, state_reason";

fn row_to_stored(row: &postgres::Row) -> Result<StoredChild, LedgerError> {
    let state_text: String = row.try_get(1)?;
    let state = ChildState::parse(&state_text).ok_or_else(|| {
        LedgerError::Migration(format!(
            "account_supervision holds an unknown state {state_text:?}; a newer marketsync wrote it"
        ))
    })?;
    let restarts: i64 = row.try_get(2)?;
    Ok(StoredChild {
        account: row.try_get(0)?,
        state,
        restarts: u64::try_from(restarts).unwrap_or(0),
        last_crash_at: row.try_get(3)?,
        last_crash_reason: row.try_get(4)?,
        quarantined_until: row.try_get(5)?,
        resume_requested: row.try_get::<_, i64>(6)? != 0,
        updated_at: row.try_get(7)?,
        state_reason: row.try_get(8)?,
    })
}

impl SupervisionStore for PgLedger {
    fn supervision_is_shared(&self) -> bool {
        true
    }

    fn load_children(&self) -> Result<Vec<StoredChild>, LedgerError> {
        self.with_client(|client| {
            client
                .query(
                    &format!("SELECT {COLUMNS} FROM account_supervision ORDER BY account"),
                    &[],
                )?
                .iter()
                .map(row_to_stored)
                .collect()
        })
    }

    fn save_children(&self, rows: &[StoredChild], now_unix: i64) -> Result<(), LedgerError> {
        self.with_tx(|tx| {
            let statement = tx.prepare(
                "INSERT INTO account_supervision
                     (account, state, restarts, last_crash_at, last_crash_reason,
                      quarantined_until, updated_at, state_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
                tx.execute(
                    &statement,
                    &[
                        &row.account,
                        &row.state.as_str(),
                        &i64::try_from(row.restarts).unwrap_or(i64::MAX),
                        &row.last_crash_at,
                        &row.last_crash_reason,
                        &row.quarantined_until,
                        &now_unix,
                        &row.state_reason,
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn take_resume_requests(&self, accounts: &[String]) -> Result<Vec<String>, LedgerError> {
        self.with_tx(|tx| {
            let requested: Vec<String> = tx
                .query(
                    "SELECT account FROM account_supervision WHERE resume_requested = 1
                     ORDER BY account FOR UPDATE",
                    &[],
                )?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?;
            let mut taken = Vec::new();
            for account in requested {
                if accounts.contains(&account) {
                    tx.execute(
                        "UPDATE account_supervision SET resume_requested = 0 WHERE account = $1",
                        &[&account],
                    )?;
                    taken.push(account);
                }
            }
            Ok(taken)
        })
    }

    fn request_resume(&self, account: &str) -> Result<bool, LedgerError> {
        self.with_client(|client| {
            let changed = client.execute(
                "UPDATE account_supervision SET resume_requested = 1, updated_at = $2
                 WHERE account = $1 AND state = 'quarantined'",
                &[&account, &Utc::now().timestamp()],
            )?;
            Ok(changed > 0)
        })
    }

    fn child_state(&self, account: &str) -> Result<Option<String>, LedgerError> {
        self.with_client(|client| {
            Ok(client
                .query_opt(
                    "SELECT state FROM account_supervision WHERE account = $1",
                    &[&account],
                )?
                .map(|row| row.try_get(0))
                .transpose()?)
        })
    }
}
